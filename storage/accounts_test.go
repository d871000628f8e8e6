package storage_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"

	"github.com/veche/veche/storage"
)

func TestCreateUserRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		user storage.User
	}{
		{"every field set", storage.User{Localpart: "full", PasswordHash: "$argon2id$x", CreatedTS: 1234, IsAdmin: true, IsGuest: true, UserType: "bot"}},
		// Empty strings are stored as NULL and must read back as empty.
		{"only required fields", storage.User{Localpart: "bare", CreatedTS: 5}},
	}
	db := open(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if err := db.CreateUser(ctx, tc.user); err != nil {
				t.Fatal(err)
			}
			got, err := db.User(ctx, tc.user.Localpart)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.user {
				t.Errorf("User() = %+v, want %+v", got, tc.user)
			}
			if got.Deactivated() {
				t.Error("new user is deactivated")
			}
		})
	}
}

func TestCreateUserConflict(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	if err := db.CreateUser(ctx, storage.User{Localpart: "alice", PasswordHash: "first", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	err := db.CreateUser(ctx, storage.User{Localpart: "alice", PasswordHash: "second", CreatedTS: 2, IsAdmin: true})
	if !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("duplicate CreateUser: err = %v, want ErrConflict", err)
	}
	u, err := db.User(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u.PasswordHash != "first" || u.IsAdmin || u.CreatedTS != 1 {
		t.Errorf("the losing insert changed the account: %+v", u)
	}
}

func TestUserNotFound(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	if _, err := db.User(ctx, "nobody"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("User(nobody): err = %v, want ErrNotFound", err)
	}
	createUser(t, db, "alice")
	for lp, want := range map[string]bool{"alice": true, "nobody": false, "Alice": false} {
		if got, err := db.UserExists(ctx, lp); err != nil || got != want {
			t.Errorf("UserExists(%q) = %v, %v; want %v", lp, got, err, want)
		}
	}
}

func TestUserUpdates(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")

	if err := db.SetPasswordHash(ctx, "alice", "h1"); err != nil {
		t.Fatal(err)
	}
	if u, _ := db.User(ctx, "alice"); u.PasswordHash != "h1" {
		t.Errorf("after SetPasswordHash: hash = %q", u.PasswordHash)
	}
	if err := db.SetPasswordHash(ctx, "alice", ""); err != nil {
		t.Fatal(err)
	}
	if u, _ := db.User(ctx, "alice"); u.PasswordHash != "" {
		t.Errorf("after clearing: hash = %q", u.PasswordHash)
	}

	for _, admin := range []bool{true, false} {
		if err := db.SetAdmin(ctx, "alice", admin); err != nil {
			t.Fatal(err)
		}
		if u, _ := db.User(ctx, "alice"); u.IsAdmin != admin {
			t.Errorf("after SetAdmin(%v): IsAdmin = %v", admin, u.IsAdmin)
		}
	}

	for name, err := range map[string]error{
		"SetPasswordHash": db.SetPasswordHash(ctx, "nobody", "h"),
		"SetAdmin":        db.SetAdmin(ctx, "nobody", true),
		"MarkDeactivated": db.MarkDeactivated(ctx, "nobody", false, 1),
	} {
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s of an unknown user: err = %v, want ErrNotFound", name, err)
		}
	}
}

func TestMarkDeactivated(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	for _, erase := range []bool{false, true} {
		lp := "keep"
		if erase {
			lp = "erase"
		}
		if err := db.CreateUser(ctx, storage.User{Localpart: lp, PasswordHash: "hash", CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
		if err := db.MarkDeactivated(ctx, lp, erase, 777); err != nil {
			t.Fatal(err)
		}
		u, err := db.User(ctx, lp)
		if err != nil {
			t.Fatal(err)
		}
		if !u.Deactivated() || u.DeactivatedTS != 777 || u.Erased != erase || u.PasswordHash != "" {
			t.Errorf("erase=%v: after MarkDeactivated got %+v", erase, u)
		}
	}
}

func TestCountUsers(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	if n, err := db.CountUsers(ctx); err != nil || n != 0 {
		t.Fatalf("empty CountUsers = %d, %v", n, err)
	}
	for _, u := range []storage.User{
		{Localpart: "a", CreatedTS: 1},
		{Localpart: "b", CreatedTS: 1, IsAdmin: true},
		{Localpart: "c", CreatedTS: 1},
		{Localpart: "1", CreatedTS: 1, IsGuest: true},
	} {
		if err := db.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.MarkDeactivated(ctx, "c", false, 5); err != nil {
		t.Fatal(err)
	}
	// Guests and deactivated accounts do not count.
	if n, err := db.CountUsers(ctx); err != nil || n != 2 {
		t.Errorf("CountUsers = %d, %v; want 2", n, err)
	}
}

func TestEnsureDevice(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	createUser(t, db, "bob")

	created, err := db.EnsureDevice(ctx, "alice", "DEV", new("Phone"), 100)
	if err != nil || !created {
		t.Fatalf("first EnsureDevice = %v, %v; want created", created, err)
	}
	created, err = db.EnsureDevice(ctx, "alice", "DEV", new("Laptop"), 200)
	if err != nil || created {
		t.Fatalf("second EnsureDevice = %v, %v; want not created", created, err)
	}
	d, err := db.Device(ctx, "alice", "DEV")
	if err != nil {
		t.Fatal(err)
	}
	if d.DisplayName == nil || *d.DisplayName != "Phone" {
		t.Errorf("display name = %v, want the one given at creation", d.DisplayName)
	}
	if d.CreatedTS != 100 || d.LastSeenTS != 100 {
		t.Errorf("timestamps = created %d, last seen %d; want both 100", d.CreatedTS, d.LastSeenTS)
	}

	// The same device ID of another user is another device.
	created, err = db.EnsureDevice(ctx, "bob", "DEV", nil, 300)
	if err != nil || !created {
		t.Fatalf("EnsureDevice for bob = %v, %v; want created", created, err)
	}
	if d, err := db.Device(ctx, "bob", "DEV"); err != nil || d.DisplayName != nil || d.Localpart != "bob" {
		t.Errorf("bob's device = %+v, %v; want no display name", d, err)
	}

	if _, err := db.EnsureDevice(ctx, "nobody", "DEV", nil, 1); err == nil {
		t.Error("EnsureDevice for an unknown user succeeded despite the foreign key")
	}
	if _, err := db.Device(ctx, "alice", "NOPE"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Device(NOPE): err = %v, want ErrNotFound", err)
	}
}

func deviceIDs(ds []storage.Device) []string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.DeviceID)
	}
	return ids
}

func TestDevicesOrderAndRename(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	createUser(t, db, "bob")
	if ds, err := db.Devices(ctx, "alice"); err != nil || len(ds) != 0 {
		t.Fatalf("Devices of a user without any = %v, %v", ds, err)
	}
	for _, id := range []string{"CCC", "AAA", "BBB"} {
		if _, err := db.EnsureDevice(ctx, "alice", id, nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.EnsureDevice(ctx, "bob", "ABC", nil, 1); err != nil {
		t.Fatal(err)
	}
	ds, err := db.Devices(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := deviceIDs(ds), []string{"AAA", "BBB", "CCC"}; !slices.Equal(got, want) {
		t.Errorf("Devices = %v, want %v", got, want)
	}

	if err := db.RenameDevice(ctx, "alice", "BBB", new("Tablet")); err != nil {
		t.Fatal(err)
	}
	if d, _ := db.Device(ctx, "alice", "BBB"); d.DisplayName == nil || *d.DisplayName != "Tablet" {
		t.Errorf("after rename: display name = %v", d.DisplayName)
	}
	if err := db.RenameDevice(ctx, "alice", "BBB", nil); err != nil {
		t.Fatal(err)
	}
	if d, _ := db.Device(ctx, "alice", "BBB"); d.DisplayName != nil {
		t.Errorf("after clearing: display name = %q", *d.DisplayName)
	}
	for _, tc := range []struct{ user, device string }{{"alice", "NOPE"}, {"bob", "AAA"}, {"nobody", "AAA"}} {
		if err := db.RenameDevice(ctx, tc.user, tc.device, new("x")); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("RenameDevice(%s, %s): err = %v, want ErrNotFound", tc.user, tc.device, err)
		}
	}
}

// tokenHash derives a distinct, stable 32-byte hash per name.
func tokenHash(name string) []byte {
	s := sha256.Sum256([]byte(name))
	return s[:]
}

func accessExists(t *testing.T, db *storage.DB, name string) bool {
	t.Helper()
	_, err := db.LookupAccessToken(t.Context(), tokenHash(name))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("LookupAccessToken(%s): %v", name, err)
	}
	return err == nil
}

func refreshExists(t *testing.T, db *storage.DB, name string) bool {
	t.Helper()
	_, err := db.LookupRefreshToken(t.Context(), tokenHash(name))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("LookupRefreshToken(%s): %v", name, err)
	}
	return err == nil
}

// addDevice creates a device with one access and one refresh token, named
// "<device>-access" and "<device>-refresh".
func addDevice(t *testing.T, db *storage.DB, localpart, deviceID string) {
	t.Helper()
	ctx := t.Context()
	if _, err := db.EnsureDevice(ctx, localpart, deviceID, nil, 1); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertRefreshToken(ctx, storage.RefreshToken{Hash: tokenHash(deviceID + "-refresh"), Localpart: localpart, DeviceID: deviceID, CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertAccessToken(ctx, storage.AccessToken{Hash: tokenHash(deviceID + "-access"), Localpart: localpart, DeviceID: deviceID,
		CreatedTS: 1, RefreshHash: tokenHash(deviceID + "-refresh")}); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteDevicesCascadesToTokens(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	for _, id := range []string{"D1", "D2", "D3"} {
		addDevice(t, db, "alice", id)
	}
	// Unknown device IDs are ignored.
	if err := db.DeleteDevices(ctx, "alice", []string{"D1", "NOPE", "D3"}); err != nil {
		t.Fatal(err)
	}
	ds, _ := db.Devices(ctx, "alice")
	if got := deviceIDs(ds); !slices.Equal(got, []string{"D2"}) {
		t.Errorf("devices left = %v, want [D2]", got)
	}
	for _, id := range []string{"D1", "D3"} {
		if accessExists(t, db, id+"-access") || refreshExists(t, db, id+"-refresh") {
			t.Errorf("tokens of deleted device %s survived", id)
		}
	}
	if !accessExists(t, db, "D2-access") || !refreshExists(t, db, "D2-refresh") {
		t.Error("tokens of the kept device were deleted")
	}
	if err := db.DeleteDevices(ctx, "alice", nil); err != nil {
		t.Errorf("DeleteDevices(nil): %v", err)
	}
}

func TestDeleteDevicesExcept(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	createUser(t, db, "bob")
	for _, id := range []string{"D1", "D2", "D3"} {
		addDevice(t, db, "alice", id)
	}
	addDevice(t, db, "bob", "B1")

	deleted, err := db.DeleteDevicesExcept(ctx, "alice", "D2")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	if !slices.Equal(deleted, []string{"D1", "D3"}) {
		t.Errorf("deleted = %v, want [D1 D3]", deleted)
	}
	ds, _ := db.Devices(ctx, "alice")
	if got := deviceIDs(ds); !slices.Equal(got, []string{"D2"}) {
		t.Errorf("devices left = %v, want [D2]", got)
	}
	if accessExists(t, db, "D1-access") || refreshExists(t, db, "D3-refresh") {
		t.Error("tokens of deleted devices survived")
	}

	// Inside a transaction too, and with nothing kept.
	err = db.Transact(ctx, func(tx *storage.Tx) error {
		deleted, err = tx.DeleteDevicesExcept(ctx, "alice", "")
		return err
	})
	if err != nil || !slices.Equal(deleted, []string{"D2"}) {
		t.Errorf("DeleteDevicesExcept(\"\") = %v, %v; want [D2]", deleted, err)
	}
	if ds, _ := db.Devices(ctx, "alice"); len(ds) != 0 {
		t.Errorf("devices left = %v, want none", deviceIDs(ds))
	}
	if ds, _ := db.Devices(ctx, "bob"); len(ds) != 1 || !accessExists(t, db, "B1-access") {
		t.Error("another user's devices were touched")
	}
}

func TestUpdateLastSeen(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	for _, id := range []string{"D1", "D2", "D3"} {
		if _, err := db.EnsureDevice(ctx, "alice", id, nil, 10); err != nil {
			t.Fatal(err)
		}
	}
	samples := []storage.LastSeen{
		{Localpart: "alice", DeviceID: "D1", TS: 50, IP: "192.0.2.1", UserAgent: "ua1"},
		{Localpart: "alice", DeviceID: "D2", TS: 60, IP: "2001:db8::1", UserAgent: "ua2"},
		// A device deleted since the sample was taken is skipped.
		{Localpart: "alice", DeviceID: "GONE", TS: 70, IP: "x", UserAgent: "y"},
	}
	if err := db.UpdateLastSeen(ctx, samples); err != nil {
		t.Fatal(err)
	}
	for _, s := range samples[:2] {
		d, err := db.Device(ctx, s.Localpart, s.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		if d.LastSeenTS != s.TS || d.LastSeenIP != s.IP || d.LastSeenUserAgent != s.UserAgent || d.CreatedTS != 10 {
			t.Errorf("%s = %+v, want sample %+v", s.DeviceID, d, s)
		}
	}
	if d, _ := db.Device(ctx, "alice", "D3"); d.LastSeenTS != 10 || d.LastSeenIP != "" || d.LastSeenUserAgent != "" {
		t.Errorf("untouched D3 = %+v", d)
	}
}

func TestAccessTokenRoundTrip(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	for _, u := range []storage.User{
		{Localpart: "plain", CreatedTS: 1},
		{Localpart: "admin", CreatedTS: 1, IsAdmin: true},
		{Localpart: "guest", CreatedTS: 1, IsGuest: true},
		{Localpart: "gone", CreatedTS: 1},
	} {
		if err := db.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if _, err := db.EnsureDevice(ctx, u.Localpart, "DEV", nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Devices of a deactivated account are normally deleted with it; the
	// flag still has to reach Authenticate if one is left behind.
	if err := db.MarkDeactivated(ctx, "gone", false, 9); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name                      string
		token                     storage.AccessToken
		guest, admin, deactivated bool
	}{
		{name: "no expiry, nil hashes", token: storage.AccessToken{Localpart: "plain", CreatedTS: 5}},
		{name: "every field set", token: storage.AccessToken{Localpart: "plain", CreatedTS: 5, ExpiresTS: 99,
			RefreshHash: tokenHash("r"), Supersedes: tokenHash("s")}},
		{name: "admin", token: storage.AccessToken{Localpart: "admin", CreatedTS: 1}, admin: true},
		{name: "guest", token: storage.AccessToken{Localpart: "guest", CreatedTS: 1}, guest: true},
		{name: "deactivated", token: storage.AccessToken{Localpart: "gone", CreatedTS: 1}, deactivated: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token
			tok.Hash, tok.DeviceID = tokenHash(tc.name), "DEV"
			if err := db.InsertAccessToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
			got, err := db.LookupAccessToken(ctx, tok.Hash)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Hash, tok.Hash) || got.Localpart != tok.Localpart || got.DeviceID != tok.DeviceID ||
				got.CreatedTS != tok.CreatedTS || got.ExpiresTS != tok.ExpiresTS {
				t.Errorf("LookupAccessToken = %+v, want %+v", got.AccessToken, tok)
			}
			// Authenticate tells "issued with a refresh token" and "first
			// use pending" apart by nil, so NULL must not come back as [].
			if (got.RefreshHash == nil) != (tok.RefreshHash == nil) || !bytes.Equal(got.RefreshHash, tok.RefreshHash) {
				t.Errorf("RefreshHash = %x, want %x", got.RefreshHash, tok.RefreshHash)
			}
			if (got.Supersedes == nil) != (tok.Supersedes == nil) || !bytes.Equal(got.Supersedes, tok.Supersedes) {
				t.Errorf("Supersedes = %x, want %x", got.Supersedes, tok.Supersedes)
			}
			if got.IsGuest != tc.guest || got.IsAdmin != tc.admin || got.Deactivated != tc.deactivated {
				t.Errorf("flags = guest %v admin %v deactivated %v; want %v %v %v",
					got.IsGuest, got.IsAdmin, got.Deactivated, tc.guest, tc.admin, tc.deactivated)
			}
		})
	}

	if err := db.InsertAccessToken(ctx, storage.AccessToken{Hash: tokenHash("admin"), Localpart: "plain", DeviceID: "DEV"}); err == nil {
		t.Error("inserting a duplicate token hash succeeded")
	}
	if err := db.InsertAccessToken(ctx, storage.AccessToken{Hash: tokenHash("x"), Localpart: "plain", DeviceID: "NOPE"}); err == nil {
		t.Error("inserting a token for an unknown device succeeded")
	}
	if _, err := db.LookupAccessToken(ctx, tokenHash("unknown")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("LookupAccessToken(unknown): err = %v, want ErrNotFound", err)
	}
}

func TestDeleteAccessTokens(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	addDevice(t, db, "alice", "D1")
	addDevice(t, db, "alice", "D2")
	if err := db.InsertAccessToken(ctx, storage.AccessToken{Hash: tokenHash("D1-second"), Localpart: "alice", DeviceID: "D1", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}

	if err := db.DeleteAccessToken(ctx, tokenHash("D1-second")); err != nil {
		t.Fatal(err)
	}
	if accessExists(t, db, "D1-second") || !accessExists(t, db, "D1-access") {
		t.Error("DeleteAccessToken removed the wrong token")
	}
	if err := db.DeleteAccessToken(ctx, tokenHash("unknown")); err != nil {
		t.Errorf("deleting an unknown token: %v", err)
	}

	if err := db.DeleteDeviceTokens(ctx, "alice", "D1"); err != nil {
		t.Fatal(err)
	}
	if accessExists(t, db, "D1-access") || refreshExists(t, db, "D1-refresh") {
		t.Error("DeleteDeviceTokens left tokens of D1")
	}
	if !accessExists(t, db, "D2-access") || !refreshExists(t, db, "D2-refresh") {
		t.Error("DeleteDeviceTokens removed tokens of D2")
	}
	if _, err := db.Device(ctx, "alice", "D1"); err != nil {
		t.Errorf("DeleteDeviceTokens removed the device: %v", err)
	}
}

func TestRefreshTokenRoundTrip(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	if _, err := db.EnsureDevice(ctx, "alice", "DEV", nil, 1); err != nil {
		t.Fatal(err)
	}
	tests := []storage.RefreshToken{
		{Hash: tokenHash("plain"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 3},
		{Hash: tokenHash("full"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 4, ExpiresTS: 40, Supersedes: tokenHash("plain")},
	}
	for _, tok := range tests {
		if err := db.InsertRefreshToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		got, err := db.LookupRefreshToken(ctx, tok.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Hash, tok.Hash) || got.Localpart != tok.Localpart || got.DeviceID != tok.DeviceID ||
			got.CreatedTS != tok.CreatedTS || got.ExpiresTS != tok.ExpiresTS ||
			(got.Supersedes == nil) != (tok.Supersedes == nil) || !bytes.Equal(got.Supersedes, tok.Supersedes) {
			t.Errorf("LookupRefreshToken = %+v, want %+v", got, tok)
		}
	}
	if _, err := db.LookupRefreshToken(ctx, tokenHash("unknown")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("LookupRefreshToken(unknown): err = %v, want ErrNotFound", err)
	}
}

// refreshChain stores what one login plus one /refresh leave behind:
// A1+R1 from the login, then A2+R2 issued in exchange for R1 and not yet
// used, plus an unrelated login's tokens (AX+RX) on the same device.
func refreshChain(t *testing.T, db *storage.DB) {
	t.Helper()
	ctx := t.Context()
	createUser(t, db, "alice")
	if _, err := db.EnsureDevice(ctx, "alice", "DEV", nil, 1); err != nil {
		t.Fatal(err)
	}
	h := tokenHash
	for _, r := range []storage.RefreshToken{
		{Hash: h("R1"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 1},
		{Hash: h("R2"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 2, Supersedes: h("R1")},
		{Hash: h("RX"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 1},
	} {
		if err := db.InsertRefreshToken(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []storage.AccessToken{
		{Hash: h("A1"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 1, ExpiresTS: 100, RefreshHash: h("R1")},
		{Hash: h("A2"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 2, ExpiresTS: 100, RefreshHash: h("R2"), Supersedes: h("R1")},
		{Hash: h("AX"), Localpart: "alice", DeviceID: "DEV", CreatedTS: 1, ExpiresTS: 100, RefreshHash: h("RX")},
	} {
		if err := db.InsertAccessToken(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRevokeRefreshToken(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	refreshChain(t, db)
	if err := db.Transact(ctx, func(tx *storage.Tx) error { return tx.RevokeRefreshToken(ctx, tokenHash("R1")) }); err != nil {
		t.Fatal(err)
	}
	if accessExists(t, db, "A1") || refreshExists(t, db, "R1") {
		t.Error("R1 or the access token issued with it survived")
	}
	a2, err := db.LookupAccessToken(ctx, tokenHash("A2"))
	if err != nil {
		t.Fatalf("A2 was deleted: %v", err)
	}
	if a2.Supersedes != nil {
		t.Errorf("A2 still points at the revoked R1: %x", a2.Supersedes)
	}
	r2, err := db.LookupRefreshToken(ctx, tokenHash("R2"))
	if err != nil {
		t.Fatalf("R2 was deleted: %v", err)
	}
	if r2.Supersedes != nil {
		t.Errorf("R2 still points at the revoked R1: %x", r2.Supersedes)
	}
	if !accessExists(t, db, "AX") || !refreshExists(t, db, "RX") {
		t.Error("unrelated tokens were revoked")
	}
}

func TestRevokeSuccessors(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	refreshChain(t, db)
	if err := db.RevokeSuccessors(ctx, tokenHash("R1")); err != nil {
		t.Fatal(err)
	}
	if accessExists(t, db, "A2") || refreshExists(t, db, "R2") {
		t.Error("the unused successors of R1 survived")
	}
	for _, name := range []string{"A1", "AX"} {
		if !accessExists(t, db, name) {
			t.Errorf("%s was deleted", name)
		}
	}
	for _, name := range []string{"R1", "RX"} {
		if !refreshExists(t, db, name) {
			t.Errorf("%s was deleted", name)
		}
	}
}
