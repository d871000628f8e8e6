package federation

import "github.com/veche/veche/internal/httpapi"

// registerServiceRoutes mounts what other servers (and, for OpenID, third
// parties) ask of this one besides room events: knocking, the room
// directory, space hierarchies, device lists and keys, OpenID userinfo.
func (f *Federation) registerServiceRoutes(rt *httpapi.Router) {
	f.handleSigned(rt, "GET /_matrix/federation/v1/make_knock/{roomId}/{userId}", f.makeKnock)
	f.handleSigned(rt, "PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}", f.sendKnock)
	f.handleSigned(rt, "GET /_matrix/federation/v1/publicRooms", f.publicRoomsGet)
	f.handleSigned(rt, "POST /_matrix/federation/v1/publicRooms", f.publicRoomsPost)
	f.handleSigned(rt, "GET /_matrix/federation/v1/hierarchy/{roomId}", f.hierarchy)
	f.handleSigned(rt, "GET /_matrix/federation/v1/user/devices/{userId}", f.userDevices)
	f.handleSigned(rt, "POST /_matrix/federation/v1/user/keys/query", f.userKeysQuery)
	f.handleSigned(rt, "POST /_matrix/federation/v1/user/keys/claim", f.userKeysClaim)
	f.handlePublic(rt, "GET /_matrix/federation/v1/openid/userinfo", f.openIDUserInfo)
}
