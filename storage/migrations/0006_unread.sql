-- A user's own latest message in a room marks everything before it read;
-- finding it must not scan the room.
CREATE INDEX rooms_events_sender ON rooms_events (room_nid, sender, stream_pos) WHERE stream_pos IS NOT NULL;
