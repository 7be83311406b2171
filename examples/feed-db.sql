-- The items of feed-db.cgi's RSS feed. Create the database beside the script with
--   sqlite3 feed.db < feed-db.sql
-- `modified` is unix seconds: the probe asks for max(modified), the feed sends the newer ones.
CREATE TABLE items (
  id INTEGER PRIMARY KEY,
  title TEXT NOT NULL,
  link TEXT NOT NULL,
  modified INTEGER NOT NULL
);
INSERT INTO items (title, link, modified) VALUES
  ('Council publishes the new bus timetable', 'https://example.org/news/1', 1717236000),
  ('Library opening hours extended', 'https://example.org/news/2', 1718445600),
  ('Summer fair on the market square', 'https://example.org/news/3', 1719914400);
