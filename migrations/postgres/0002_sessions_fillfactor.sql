-- Leave room on each sessions page so that updating last_accessed_at / expires_at (columns
-- no index covers) is a HOT update: a new row version on the same page and no index writes.
-- With full pages every touch also inserted into three indexes.
ALTER TABLE sessions SET (fillfactor = 70);
