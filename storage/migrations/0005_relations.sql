-- Relations, threads and bundled aggregations.

-- GET /threads ranks a room's threads by their latest reply; without this
-- index it reads every event of the room to find the thread replies.
-- Room, then root, then topological order: each thread's replies come
-- out in the order the ranking wants.
CREATE INDEX IF NOT EXISTS rooms_events_threads ON rooms_events (room_nid, relates_to, depth, stream_pos)
    WHERE rel_type = 'm.thread' AND stream_pos IS NOT NULL AND redacted_by IS NULL;
