#!/usr/bin/env python3
# Demonstrates feed mode: only items newer than the client's copy (CONDITIONAL_CLIENT_DATE) are sent.
import os, sys
from email.utils import formatdate
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    since = int(os.environ.get("CONDITIONAL_CLIENT_DATE", "0"))
except ValueError:
    since = 0

items = []  # (unix seconds, title), one "SECONDS<TAB>TITLE" per line
with open(os.path.join(HERE, "feed-items.txt"), encoding="utf-8") as f:
    for line in f:
        stamp, _, title = line.rstrip("\n").partition("\t")
        if stamp.strip().isdigit() and int(stamp) > since:
            items.append((int(stamp), title))
items.sort(reverse=True)

link = "http://%s%s" % (os.environ.get("HTTP_HOST", "localhost"), os.environ.get("SCRIPT_NAME", "/feed.cgi"))
out = ['<?xml version="1.0" encoding="utf-8"?>', '<rss version="2.0">', "<channel>",
       "<title>http-conditional example feed</title>",
       "<link>%s</link>" % escape(link),
       "<description>Only items newer than your cached copy</description>"]
for stamp, title in items:
    out += ["<item>", "<title>%s</title>" % escape(title),
            "<pubDate>%s</pubDate>" % formatdate(stamp, usegmt=True),
            '<guid isPermaLink="false">item-%d</guid>' % stamp, "</item>"]
out += ["</channel>", "</rss>", ""]
sys.stdout.buffer.write(("Content-Type: application/rss+xml; charset=utf-8\n\n" + "\n".join(out)).encode("utf-8"))
