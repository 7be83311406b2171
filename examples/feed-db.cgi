#!/usr/bin/env python3
# The original library's RSS case on SQLite: items in feed.db (made from feed-db.sql). The site
# rules' probe_command asks sqlite3 for max(modified), so a fresh client gets its 304 without
# this script starting; in feed mode it sends only items newer than CONDITIONAL_CLIENT_DATE.
import os, sqlite3, sys
from email.utils import formatdate
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    since = int(os.environ.get("CONDITIONAL_CLIENT_DATE", "0"))
except ValueError:
    since = 0

db = sqlite3.connect("file:%s?mode=ro" % os.path.join(HERE, "feed.db"), uri=True)
rows = db.execute(
    "SELECT title, link, modified FROM items WHERE modified > ? ORDER BY modified DESC", (since,)
).fetchall()
db.close()

link = "http://%s%s" % (os.environ.get("HTTP_HOST", "localhost"), os.environ.get("SCRIPT_NAME", "/feed-db.cgi"))
out = ['<?xml version="1.0" encoding="utf-8"?>', '<rss version="2.0">', "<channel>",
       "<title>http-conditional SQLite feed</title>",
       "<link>%s</link>" % escape(link),
       "<description>Only items newer than your cached copy</description>"]
for title, item_link, modified in rows:
    out += ["<item>", "<title>%s</title>" % escape(title), "<link>%s</link>" % escape(item_link),
            "<pubDate>%s</pubDate>" % formatdate(modified, usegmt=True), "</item>"]
out += ["</channel>", "</rss>", ""]
sys.stdout.buffer.write(("Content-Type: application/rss+xml; charset=utf-8\n\n" + "\n".join(out)).encode("utf-8"))
