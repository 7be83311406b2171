#!/bin/sh
# Demonstrates a declared static-ish page: fixed last_modified, public caching and gzip.
now=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
printf 'Content-Type: text/html; charset=utf-8\n\n'
cat <<HTML
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Conditional requests for legacy CGI</title>
</head>
<body>
<h1>Conditional requests for legacy CGI</h1>
<p>This article is served by a plain shell script. Its sidecar declares when it last
changed, so a browser that already has it gets <code>304 Not Modified</code> and the
script does not run at all.</p>
<p>The body is long enough to be worth compressing: the wrapper gzips it when the
client sends <code>Accept-Encoding: gzip</code>, and a shared cache may keep it for
60 seconds (<code>Cache-Control: public, max-age=60</code>).</p>
<p>Reload the page: as long as the time below does not change, the script did not run.</p>
<p id="generated">Generated at $now</p>
</body>
</html>
HTML
