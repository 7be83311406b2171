<?php
// The original httpConditional() library's decision, reduced to what the benchmark measures:
// the script's mtime against the client's validators, a 304 when they match. It runs under
// php-cgi exactly as legacy pages do, so php-cgi starts for every request, 304 or not.
function httpConditional($unixTimeStamp, $cacheSeconds = 0)
{
    $scriptName = isset($_SERVER['SCRIPT_FILENAME']) ? $_SERVER['SCRIPT_FILENAME'] : $_SERVER['PATH_TRANSLATED'];
    $modifScript = filemtime($scriptName);
    if ($modifScript > $unixTimeStamp) $unixTimeStamp = $modifScript;
    $unixTimeStamp = min($unixTimeStamp, time());
    $dateLastModif = gmdate('D, d M Y H:i:s \G\M\T', $unixTimeStamp);
    $etagServer = '"' . md5($scriptName . $unixTimeStamp) . '"';
    $is304 = true;
    $nbCond = 0;
    if (isset($_SERVER['HTTP_IF_MATCH'])) {
        $etagsClient = stripslashes($_SERVER['HTTP_IF_MATCH']);
        if ($etagsClient != '*' && strpos($etagsClient, $etagServer) === false) {
            header('HTTP/1.1 412 Precondition Failed');
            exit();
        }
    }
    if (isset($_SERVER['HTTP_IF_NONE_MATCH'])) {
        $nbCond++;
        $etagClient = stripslashes($_SERVER['HTTP_IF_NONE_MATCH']);
        if ($etagClient != $etagServer && $etagClient != '*') $is304 = false;
    }
    if (isset($_SERVER['HTTP_IF_MODIFIED_SINCE'])) {
        $nbCond++;
        $ims = explode(';', $_SERVER['HTTP_IF_MODIFIED_SINCE'])[0];
        if (strcasecmp($ims, $dateLastModif) != 0) $is304 = false;
    }
    if ($nbCond == 0) $is304 = false;
    header('Cache-Control: private, max-age=' . $cacheSeconds . ', must-revalidate');
    header('Expires: ' . gmdate('D, d M Y H:i:s \G\M\T', time() + $cacheSeconds));
    header('Last-Modified: ' . $dateLastModif);
    header('ETag: ' . $etagServer);
    if ($is304) {
        header('Status: 304 Not Modified');
        exit();
    }
    return false;
}

httpConditional(1700000000);
header('Content-Type: text/html; charset=utf-8');
echo str_repeat("<p>The same twenty kilobytes as the shell page.</p>\n", 400);
