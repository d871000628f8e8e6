-- The published room directory and the user directory.

-- Every /publicRooms request starts from the published rooms.
CREATE INDEX IF NOT EXISTS rooms_rooms_published ON rooms_rooms (room_nid) WHERE visibility = 'public';

-- Room-level state (join rules, history visibility, name, …) of many
-- rooms at once, by type: the user directory looks at every room's join
-- rules, which the primary key (room first) cannot find without a scan.
CREATE INDEX IF NOT EXISTS rooms_current_state_room_level ON rooms_current_state (type, room_nid) WHERE state_key = '';
