package clientapi

import "github.com/veche/veche/internal/httpapi"

// Register mounts every client API route on rt. This is the map of the
// client API: one line per endpoint, grouped by spec module.
func (a *API) Register(rt *httpapi.Router) {
	// Discovery.
	a.handleAt(rt, "GET", "/_matrix/client/versions", public, a.versions)
	a.handleAt(rt, "GET", "/.well-known/matrix/client", public, a.wellKnownClient)
	a.handleAt(rt, "GET", "/.well-known/matrix/server", public, a.wellKnownServer)
	a.handle(rt, "GET", "/capabilities", guestOK, a.capabilities)

	// Registration.
	a.handle(rt, "POST", "/register", public, a.register)
	a.handle(rt, "GET", "/register/available", public, a.registerAvailable)
	a.handleAt(rt, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity", public, a.registrationTokenValidity)
	a.handleAt(rt, "GET", "/_synapse/admin/v1/register", public, a.adminRegisterNonce)
	a.handleAt(rt, "POST", "/_synapse/admin/v1/register", public, a.adminRegister)

	// Login and sessions.
	a.handle(rt, "GET", "/login", public, a.loginFlows)
	a.handle(rt, "POST", "/login", public, a.login)
	a.handle(rt, "POST", "/refresh", public, a.refresh)
	a.handle(rt, "POST", "/logout", guestOK, a.logout)
	a.handle(rt, "POST", "/logout/all", guestOK, a.logoutAll)
	a.handle(rt, "GET", "/account/whoami", guestOK, a.whoami)

	// Account management.
	a.handle(rt, "POST", "/account/password", user, a.changePassword)
	a.handle(rt, "POST", "/account/deactivate", user, a.deactivate)
	a.handle(rt, "GET", "/account/3pid", user, a.threePIDs)

	// Devices.
	a.handle(rt, "GET", "/devices", guestOK, a.listDevices)
	a.handle(rt, "GET", "/devices/{deviceId}", guestOK, a.getDevice)
	a.handle(rt, "PUT", "/devices/{deviceId}", guestOK, a.updateDevice)
	a.handle(rt, "DELETE", "/devices/{deviceId}", user, a.deleteDevice)
	a.handle(rt, "POST", "/delete_devices", user, a.deleteDevices)

	// Profiles.
	a.handle(rt, "GET", "/profile/{userId}", public, a.getProfile)
	a.handle(rt, "GET", "/profile/{userId}/{keyName}", public, a.getProfileField)
	a.handle(rt, "PUT", "/profile/{userId}/{keyName}", guestOK, a.setProfileField)
	a.handle(rt, "DELETE", "/profile/{userId}/{keyName}", guestOK, a.deleteProfileField)

	// Client config (account data).
	a.handle(rt, "GET", "/user/{userId}/account_data/{type}", guestOK, a.getAccountData)
	a.handle(rt, "PUT", "/user/{userId}/account_data/{type}", guestOK, a.putAccountData)
	a.handle(rt, "GET", "/user/{userId}/rooms/{roomId}/account_data/{type}", guestOK, a.getAccountData)
	a.handle(rt, "PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}", guestOK, a.putAccountData)

	// OpenID.
	a.handle(rt, "POST", "/user/{userId}/openid/request_token", user, a.requestOpenIDToken)

	// Rooms: creation and membership.
	a.handle(rt, "POST", "/createRoom", user, a.createRoom)
	a.handle(rt, "POST", "/join/{roomIdOrAlias}", guestOK, a.joinRoom)
	a.handle(rt, "POST", "/rooms/{roomId}/join", guestOK, a.joinRoom)
	a.handle(rt, "POST", "/knock/{roomIdOrAlias}", user, a.knockRoom)
	a.handle(rt, "POST", "/rooms/{roomId}/leave", guestOK, a.leaveRoom)
	a.handle(rt, "POST", "/rooms/{roomId}/forget", guestOK, a.forgetRoom)
	a.handle(rt, "POST", "/rooms/{roomId}/invite", user, a.memberAction("invite", false))
	a.handle(rt, "POST", "/rooms/{roomId}/kick", user, a.memberAction("leave", false))
	a.handle(rt, "POST", "/rooms/{roomId}/ban", user, a.memberAction("ban", false))
	a.handle(rt, "POST", "/rooms/{roomId}/unban", user, a.memberAction("leave", true))
	a.handle(rt, "GET", "/joined_rooms", guestOK, a.joinedRooms)
	a.handle(rt, "GET", "/rooms/{roomId}/members", guestOK, a.members)
	a.handle(rt, "GET", "/rooms/{roomId}/joined_members", guestOK, a.joinedMembers)

	// Rooms: events and state.
	a.handle(rt, "PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", guestOK, a.sendMessage)
	a.handle(rt, "PUT", "/rooms/{roomId}/state/{eventType}", user, a.setState)
	a.handle(rt, "PUT", "/rooms/{roomId}/state/{eventType}/{stateKey...}", user, a.setState)
	a.handle(rt, "GET", "/rooms/{roomId}/state", guestOK, a.getState)
	a.handle(rt, "GET", "/rooms/{roomId}/state/{eventType}", guestOK, a.getStateEvent)
	a.handle(rt, "GET", "/rooms/{roomId}/state/{eventType}/{stateKey...}", guestOK, a.getStateEvent)
	a.handle(rt, "GET", "/rooms/{roomId}/event/{eventId}", guestOK, a.getEvent)
	a.handle(rt, "PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", user, a.redact)
	a.handle(rt, "GET", "/rooms/{roomId}/messages", guestOK, a.messages)
	a.handle(rt, "POST", "/rooms/{roomId}/upgrade", user, a.upgradeRoom)

	// Spaces.
	a.handleAt(rt, "GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy", guestOK, a.hierarchy)

	// Modules with their own route lists.
	a.registerDirectoryRoutes(rt)
	a.registerRelationsRoutes(rt)
	a.registerEphemeralRoutes(rt)
	a.registerPushRulesRoutes(rt)
	a.registerPresenceRoutes(rt)

	// Send-to-device messaging.
	a.handle(rt, "PUT", "/sendToDevice/{eventType}/{txnId}", guestOK, a.sendToDevice)
	a.registerKeysRoutes(rt)

	// Filtering.
	a.handle(rt, "POST", "/user/{userId}/filter", guestOK, a.createFilter)
	a.handle(rt, "GET", "/user/{userId}/filter/{filterId}", guestOK, a.getFilter)
}
