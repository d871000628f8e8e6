package accounts_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/testdb"
	"github.com/veche/veche/storage"
)

// fakeClock is a settable Deps.Now, so that expiry is tested without sleeping.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const accessLifetime = 5 * time.Minute

type env struct {
	svc   *accounts.Service
	db    *storage.DB
	clock *fakeClock
}

func newEnv(t *testing.T, auth config.Auth) *env {
	t.Helper()
	backend, dsn := testdb.Parse(t)
	db, err := storage.Open(context.Background(), backend, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if auth.AccessTokenLifetime == 0 {
		auth.AccessTokenLifetime = accessLifetime
	}
	clock := &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	svc := accounts.New(accounts.Deps{
		// Log left nil: New must cope, and tests want no log output.
		DB: db, ServerName: "example.org", Auth: auth, Now: clock.Now,
		Password: config.Password{MinLength: 8, Argon2: tinyArgon2},
	})
	return &env{svc: svc, db: db, clock: clock}
}

func (e *env) create(t *testing.T, acct accounts.NewAccount, login *accounts.LoginOptions) *accounts.Session {
	t.Helper()
	sess, err := e.svc.Create(t.Context(), acct, login)
	if err != nil {
		t.Fatalf("creating %+v: %v", acct, err)
	}
	return sess
}

func (e *env) login(t *testing.T, localpart string, opts accounts.LoginOptions) *accounts.Session {
	t.Helper()
	sess, err := e.svc.Login(t.Context(), localpart, opts)
	if err != nil {
		t.Fatalf("logging in %s: %v", localpart, err)
	}
	return sess
}

func (e *env) refresh(t *testing.T, token string) *accounts.Session {
	t.Helper()
	sess, err := e.svc.Refresh(t.Context(), token)
	if err != nil {
		t.Fatalf("refreshing: %v", err)
	}
	return sess
}

// authOK fails the test unless token authenticates.
func (e *env) authOK(t *testing.T, token string) *accounts.Requester {
	t.Helper()
	r, err := e.svc.Authenticate(t.Context(), token, "192.0.2.1", "test")
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return r
}

// authRejected fails the test unless token is refused with M_UNKNOWN_TOKEN,
// and returns the error to check further fields.
func (e *env) authRejected(t *testing.T, token string) *mxerr.Error {
	t.Helper()
	_, err := e.svc.Authenticate(t.Context(), token, "192.0.2.1", "test")
	return wantMxErr(t, err, mxerr.UnknownToken("", false))
}

func (e *env) refreshRejected(t *testing.T, token string) {
	t.Helper()
	_, err := e.svc.Refresh(t.Context(), token)
	wantMxErr(t, err, mxerr.UnknownToken("", false))
}

func wantMxErr(t *testing.T, err error, want *mxerr.Error) *mxerr.Error {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %s", err, want.ErrCode)
	}
	var e *mxerr.Error
	errors.As(err, &e)
	return e
}

func softLogout(e *mxerr.Error) bool {
	v, _ := e.Extra["soft_logout"].(bool)
	return v
}

func TestCreateWithoutLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	sess := e.create(t, accounts.NewAccount{Localpart: "alice", Password: "password1", Admin: true, UserType: "bot"}, nil)
	if sess.UserID.String() != "@alice:example.org" || sess.AccessToken != "" || sess.DeviceID != "" || sess.RefreshToken != "" {
		t.Errorf("session = %+v, want only the user ID", sess)
	}
	u, err := e.db.User(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !u.IsAdmin || u.IsGuest || u.UserType != "bot" || u.CreatedTS != e.clock.Now().UnixMilli() || u.PasswordHash == "" {
		t.Errorf("stored user = %+v", u)
	}
	if ds, _ := e.db.Devices(ctx, "alice"); len(ds) != 0 {
		t.Errorf("devices = %+v, want none", ds)
	}
	if _, err := e.svc.CheckPassword(ctx, "alice", "password1"); err != nil {
		t.Errorf("CheckPassword: %v", err)
	}
}

func TestCreateDisplayName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	tests := []struct {
		acct accounts.NewAccount
		want string
	}{
		{accounts.NewAccount{Localpart: "alice"}, `"alice"`},
		{accounts.NewAccount{Localpart: "bob", DisplayName: "Bob \"B\""}, `"Bob \"B\""`},
		// Guests always start with their numeric localpart.
		{accounts.NewAccount{Guest: true, DisplayName: "ignored"}, `"1"`},
	}
	for _, tc := range tests {
		sess := e.create(t, tc.acct, nil)
		fields, err := e.db.ProfileFields(t.Context(), sess.UserID.Local())
		if err != nil {
			t.Fatal(err)
		}
		if got := string(fields["displayname"]); got != tc.want {
			t.Errorf("%s: displayname = %s, want %s", sess.UserID.String(), got, tc.want)
		}
	}
}

func TestCreateWithLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	sess := e.create(t, accounts.NewAccount{Localpart: "alice", Password: "password1"},
		&accounts.LoginOptions{DisplayName: new("Phone")})
	if sess.AccessToken == "" || sess.DeviceID == "" || sess.RefreshToken != "" || sess.ExpiresIn != 0 {
		t.Fatalf("session = %+v, want a non-expiring access token", sess)
	}
	if !strings.HasPrefix(sess.AccessToken, "vat_") {
		t.Errorf("access token %q lacks the scanner-visible prefix", sess.AccessToken)
	}
	r := e.authOK(t, sess.AccessToken)
	if r.UserID.String() != "@alice:example.org" || r.Localpart() != "alice" || r.DeviceID != sess.DeviceID || r.IsGuest || r.IsAdmin {
		t.Errorf("requester = %+v", r)
	}
	d, err := e.db.Device(ctx, "alice", sess.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if d.DisplayName == nil || *d.DisplayName != "Phone" {
		t.Errorf("device display name = %v", d.DisplayName)
	}

	refreshing := e.create(t, accounts.NewAccount{Localpart: "bob"}, &accounts.LoginOptions{DeviceID: "BOBDEV", Refresh: true})
	if refreshing.DeviceID != "BOBDEV" || !strings.HasPrefix(refreshing.RefreshToken, "vrt_") || refreshing.ExpiresIn != accessLifetime {
		t.Errorf("refreshable session = %+v", refreshing)
	}
	e.authOK(t, refreshing.AccessToken)
}

func TestCreateUserInUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	e.create(t, accounts.NewAccount{Localpart: "alice", Password: "first-password"}, nil)
	_, err := e.svc.Create(ctx, accounts.NewAccount{Localpart: "alice", Password: "second-password", Admin: true},
		&accounts.LoginOptions{DeviceID: "DEV"})
	wantMxErr(t, err, mxerr.UserInUse(""))
	// The failed attempt changed nothing, and in particular made no device.
	if _, err := e.svc.CheckPassword(ctx, "alice", "first-password"); err != nil {
		t.Errorf("original password no longer works: %v", err)
	}
	if ds, _ := e.db.Devices(ctx, "alice"); len(ds) != 0 {
		t.Errorf("failed Create left devices %+v", ds)
	}
	if u, _ := e.db.User(ctx, "alice"); u.IsAdmin {
		t.Error("failed Create made alice an admin")
	}
}

func TestCreateGuests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	for i, want := range []string{"1", "2", "3"} {
		var login *accounts.LoginOptions
		if i == 1 {
			login = &accounts.LoginOptions{}
		}
		sess := e.create(t, accounts.NewAccount{Guest: true, Localpart: "ignored"}, login)
		if got := sess.UserID.Local(); got != want {
			t.Errorf("guest %d got localpart %q, want %q", i, got, want)
		}
		u, err := e.db.User(t.Context(), want)
		if err != nil || !u.IsGuest {
			t.Errorf("guest %s stored as %+v, %v", want, u, err)
		}
		if login != nil && !e.authOK(t, sess.AccessToken).IsGuest {
			t.Error("guest's requester is not marked as guest")
		}
	}
	if ok, _ := e.db.UserExists(t.Context(), "ignored"); ok {
		t.Error("a guest got the requested localpart")
	}
}

// Shared-secret registration and the admin CLI accept numeric localparts.
func TestCreateGuestSkipsTakenNumbers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	e.create(t, accounts.NewAccount{Localpart: "1"}, nil)
	e.create(t, accounts.NewAccount{Localpart: "3"}, nil)
	var got []string
	for range 3 {
		got = append(got, e.create(t, accounts.NewAccount{Guest: true}, nil).UserID.Local())
	}
	if want := []string{"2", "4", "5"}; !slices.Equal(got, want) {
		t.Errorf("guest localparts = %v, want %v", got, want)
	}
	if u, _ := e.db.User(t.Context(), "1"); u.IsGuest {
		t.Error("the existing account 1 became a guest")
	}
}

func TestCheckPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	e.create(t, accounts.NewAccount{Localpart: "alice", Password: "correct horse"}, nil)
	e.create(t, accounts.NewAccount{Localpart: "nopassword"}, nil)
	e.create(t, accounts.NewAccount{Localpart: "dave", Password: "dave's password"}, nil)
	if err := e.svc.Deactivate(ctx, "dave", false); err != nil {
		t.Fatal(err)
	}
	// Accounts imported from Synapse carry bcrypt hashes.
	e.create(t, accounts.NewAccount{Localpart: "imported"}, nil)
	b, _ := bcrypt.GenerateFromPassword([]byte("old synapse pw"), bcrypt.MinCost)
	if err := e.db.SetPasswordHash(ctx, "imported", string(b)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, localpart, password string
		want                      *mxerr.Error // nil: accepted
	}{
		{"right password", "alice", "correct horse", nil},
		{"bcrypt hash", "imported", "old synapse pw", nil},
		{"wrong password", "alice", "wrong horse", mxerr.Forbidden("")},
		{"empty password", "alice", "", mxerr.Forbidden("")},
		{"unknown user", "nobody", "correct horse", mxerr.Forbidden("")},
		{"account without password", "nopassword", "", mxerr.Forbidden("")},
		{"too long", "alice", strings.Repeat("x", 1025), mxerr.Forbidden("")},
		{"deactivated", "dave", "dave's password", mxerr.Forbidden("")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := e.svc.CheckPassword(ctx, tc.localpart, tc.password)
			if tc.want == nil {
				if err != nil || u.Localpart != tc.localpart {
					t.Errorf("CheckPassword = %+v, %v; want the user", u, err)
				}
				return
			}
			wantMxErr(t, err, tc.want)
		})
	}
}

func TestCheckPasswordPolicy(t *testing.T) {
	t.Parallel()
	svc := accounts.New(accounts.Deps{Password: config.Password{MinLength: 8}})
	for pw, ok := range map[string]bool{
		"1234567":                 false,
		"12345678":                true,
		"ääääääää":                true, // characters, not bytes
		strings.Repeat("x", 1024): true,
		strings.Repeat("x", 1025): false,
		strings.Repeat("ä", 513):  false, // 1026 bytes
	} {
		err := svc.CheckPasswordPolicy(pw)
		if ok && err != nil {
			t.Errorf("CheckPasswordPolicy(%.10q…) = %v", pw, err)
		}
		if !ok && !errors.Is(err, mxerr.WeakPassword("")) {
			t.Errorf("CheckPasswordPolicy(%.10q…) = %v, want M_WEAK_PASSWORD", pw, err)
		}
	}
}

func TestLocalpartOf(t *testing.T) {
	t.Parallel()
	svc := accounts.New(accounts.Deps{ServerName: "example.org"})
	if id := svc.UserID("alice"); id.String() != "@alice:example.org" {
		t.Errorf("UserID = %q", id.String())
	}
	for id, want := range map[string]string{
		"@alice:example.org": "alice",
		"@alice:other.org":   "",
		"alice":              "",
	} {
		got, err := svc.LocalpartOf(id)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("LocalpartOf(%q) = %q, %v; want %q", id, got, err, want)
		}
	}
}

var deviceIDPattern = regexp.MustCompile(`^[A-Z]{10}$`)

func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	e.create(t, accounts.NewAccount{Localpart: "alice", Password: "password1"}, nil)

	first := e.login(t, "alice", accounts.LoginOptions{DisplayName: new("Laptop")})
	if !deviceIDPattern.MatchString(first.DeviceID) {
		t.Errorf("generated device ID %q", first.DeviceID)
	}
	second := e.login(t, "alice", accounts.LoginOptions{})
	if second.DeviceID == first.DeviceID {
		t.Fatal("two logins without device_id share a device")
	}
	e.authOK(t, first.AccessToken)
	e.authOK(t, second.AccessToken)

	// Logging in again with the first device's ID replaces its token only.
	again := e.login(t, "alice", accounts.LoginOptions{DeviceID: first.DeviceID, DisplayName: new("Renamed?")})
	if again.DeviceID != first.DeviceID || again.AccessToken == first.AccessToken {
		t.Fatalf("re-login session = %+v", again)
	}
	e.authRejected(t, first.AccessToken)
	if r := e.authOK(t, again.AccessToken); r.DeviceID != first.DeviceID {
		t.Errorf("new token is for device %q", r.DeviceID)
	}
	e.authOK(t, second.AccessToken)
	ds, err := e.db.Devices(ctx, "alice")
	if err != nil || len(ds) != 2 {
		t.Fatalf("devices = %+v, %v; want 2", ds, err)
	}
	if d, _ := e.db.Device(ctx, "alice", first.DeviceID); d.DisplayName == nil || *d.DisplayName != "Laptop" {
		t.Errorf("re-login changed the display name to %v", d.DisplayName)
	}

	// Re-login also drops the device's refresh tokens.
	withRefresh := e.login(t, "alice", accounts.LoginOptions{DeviceID: "REFRESHING", Refresh: true})
	e.login(t, "alice", accounts.LoginOptions{DeviceID: "REFRESHING"})
	e.refreshRejected(t, withRefresh.RefreshToken)
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()

	if err := e.authRejected(t, "vat_unknown"); softLogout(err) {
		t.Error("unknown token answered with soft_logout")
	}
	e.authRejected(t, "")

	admin := e.create(t, accounts.NewAccount{Localpart: "admin", Admin: true}, &accounts.LoginOptions{})
	if r := e.authOK(t, admin.AccessToken); !r.IsAdmin || r.IsGuest {
		t.Errorf("admin requester = %+v", r)
	}

	// Tokens issued without a refresh token never expire.
	e.clock.Advance(10 * 365 * 24 * time.Hour)
	e.authOK(t, admin.AccessToken)

	// Deactivate deletes tokens; the flag check covers any left behind.
	gone := e.create(t, accounts.NewAccount{Localpart: "gone"}, &accounts.LoginOptions{})
	if err := e.db.MarkDeactivated(ctx, "gone", false, 1); err != nil {
		t.Fatal(err)
	}
	if err := e.authRejected(t, gone.AccessToken); softLogout(err) {
		t.Error("deactivated account answered with soft_logout")
	}
}

func TestAuthenticateExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	sess := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{Refresh: true})
	if sess.ExpiresIn != accessLifetime {
		t.Errorf("ExpiresIn = %v, want %v", sess.ExpiresIn, accessLifetime)
	}
	e.clock.Advance(accessLifetime - time.Millisecond)
	e.authOK(t, sess.AccessToken)
	e.clock.Advance(time.Millisecond)
	if err := e.authRejected(t, sess.AccessToken); !softLogout(err) {
		t.Errorf("expired token: soft_logout = %v, want true", err.Extra["soft_logout"])
	}
	// The client is expected to refresh, and that works after expiry.
	next := e.refresh(t, sess.RefreshToken)
	e.authOK(t, next.AccessToken)
}

// Spec, refreshing access tokens: the old refresh token stays valid until
// the new access token or refresh token is first used.
func TestRefreshOldTokensValidUntilNewUsed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	s1 := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{Refresh: true})
	s2 := e.refresh(t, s1.RefreshToken)
	if s2.DeviceID != s1.DeviceID || s2.AccessToken == s1.AccessToken || s2.RefreshToken == s1.RefreshToken || s2.ExpiresIn != accessLifetime {
		t.Fatalf("refreshed session = %+v", s2)
	}
	e.authOK(t, s1.AccessToken)
	e.authOK(t, s1.AccessToken)

	if r := e.authOK(t, s2.AccessToken); r.DeviceID != s1.DeviceID {
		t.Errorf("A2 is for device %q", r.DeviceID)
	}
	e.authRejected(t, s1.AccessToken)
	e.refreshRejected(t, s1.RefreshToken)
	// Later uses of A2 keep working, and R2 can be exchanged.
	e.authOK(t, s2.AccessToken)
	s3 := e.refresh(t, s2.RefreshToken)
	e.authOK(t, s3.AccessToken)
	e.authRejected(t, s2.AccessToken)
}

func TestRefreshWithNewRefreshTokenRevokesOld(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	s1 := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{Refresh: true})
	s2 := e.refresh(t, s1.RefreshToken)
	// Using R2 (rather than A2) first also counts as use of the new tokens.
	s3 := e.refresh(t, s2.RefreshToken)
	e.refreshRejected(t, s1.RefreshToken)
	e.authRejected(t, s1.AccessToken)
	// R2 was exchanged but A3/R3 are unused, so A2 still works.
	e.authOK(t, s2.AccessToken)
	e.authOK(t, s3.AccessToken)
	e.authRejected(t, s2.AccessToken)
	e.refreshRejected(t, s2.RefreshToken)
	e.refresh(t, s3.RefreshToken)
}

// A client that lost the /refresh response retries with the same token.
func TestRefreshRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	s1 := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{Refresh: true})
	lost := e.refresh(t, s1.RefreshToken)
	retry := e.refresh(t, s1.RefreshToken)
	if retry.AccessToken == lost.AccessToken || retry.RefreshToken == lost.RefreshToken {
		t.Fatal("the retry returned the same tokens")
	}
	// The unused tokens of the lost response are gone.
	e.authRejected(t, lost.AccessToken)
	e.refreshRejected(t, lost.RefreshToken)
	e.authOK(t, s1.AccessToken)
	e.authOK(t, retry.AccessToken)
	e.authRejected(t, s1.AccessToken)
	e.refreshRejected(t, s1.RefreshToken)
	e.refresh(t, retry.RefreshToken)
}

func TestRefreshRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	e.refreshRejected(t, "vrt_unknown")
	s := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{Refresh: true})
	// An access token is not a refresh token.
	e.refreshRejected(t, s.AccessToken)
	// Refresh tokens do not expire unless configured to.
	e.clock.Advance(10 * 365 * 24 * time.Hour)
	s = e.refresh(t, s.RefreshToken)
	if err := e.svc.Deactivate(t.Context(), "alice", false); err != nil {
		t.Fatal(err)
	}
	e.refreshRejected(t, s.RefreshToken)
}

func TestRefreshTokenExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{RefreshTokenLifetime: time.Hour})
	s1 := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{Refresh: true})
	s2 := e.create(t, accounts.NewAccount{Localpart: "bob"}, &accounts.LoginOptions{Refresh: true})

	e.clock.Advance(time.Hour - time.Millisecond)
	// Each exchange starts a new lifetime.
	s1b := e.refresh(t, s1.RefreshToken)
	e.clock.Advance(time.Millisecond)
	e.refreshRejected(t, s2.RefreshToken)

	e.clock.Advance(time.Hour - 2*time.Millisecond)
	s1c := e.refresh(t, s1b.RefreshToken)
	e.clock.Advance(time.Hour)
	e.refreshRejected(t, s1c.RefreshToken)
}

func loginDevices(t *testing.T, e *env, localpart string, ids ...string) map[string]*accounts.Session {
	t.Helper()
	out := map[string]*accounts.Session{}
	for _, id := range ids {
		out[id] = e.login(t, localpart, accounts.LoginOptions{DeviceID: id, Refresh: true})
	}
	return out
}

func deviceIDs(t *testing.T, e *env, localpart string) []string {
	t.Helper()
	ds, err := e.db.Devices(t.Context(), localpart)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.DeviceID)
	}
	return ids
}

func TestSetPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	e.create(t, accounts.NewAccount{Localpart: "alice", Password: "old password"}, nil)
	e.create(t, accounts.NewAccount{Localpart: "bob"}, nil)
	sessions := loginDevices(t, e, "alice", "D1", "D2", "D3")
	bobs := loginDevices(t, e, "bob", "D1")

	if err := e.svc.SetPassword(ctx, "alice", "new password", false, ""); err != nil {
		t.Fatal(err)
	}
	if got := deviceIDs(t, e, "alice"); len(got) != 3 {
		t.Errorf("without logoutOthers devices = %v", got)
	}
	if _, err := e.svc.CheckPassword(ctx, "alice", "new password"); err != nil {
		t.Errorf("new password refused: %v", err)
	}
	_, err := e.svc.CheckPassword(ctx, "alice", "old password")
	wantMxErr(t, err, mxerr.Forbidden(""))

	if err := e.svc.SetPassword(ctx, "alice", "newer password", true, "D2"); err != nil {
		t.Fatal(err)
	}
	if got := deviceIDs(t, e, "alice"); !slices.Equal(got, []string{"D2"}) {
		t.Errorf("devices = %v, want [D2]", got)
	}
	for _, id := range []string{"D1", "D3"} {
		e.authRejected(t, sessions[id].AccessToken)
		e.refreshRejected(t, sessions[id].RefreshToken)
	}
	e.authOK(t, sessions["D2"].AccessToken)
	e.authOK(t, bobs["D1"].AccessToken)

	if err := e.svc.SetPassword(ctx, "alice", "newest password", true, ""); err != nil {
		t.Fatal(err)
	}
	if got := deviceIDs(t, e, "alice"); len(got) != 0 {
		t.Errorf("devices = %v, want none", got)
	}
	if err := e.svc.SetPassword(ctx, "nobody", "password", false, ""); err == nil {
		t.Error("SetPassword of an unknown user succeeded")
	}
}

func TestDeactivate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	e.create(t, accounts.NewAccount{Localpart: "alice", Password: "password1"}, nil)
	e.create(t, accounts.NewAccount{Localpart: "bob"}, nil)
	sessions := loginDevices(t, e, "alice", "D1", "D2")
	bobs := loginDevices(t, e, "bob", "D1")
	if err := e.db.SetProfileField(ctx, "alice", "avatar_url", json.RawMessage(`"mxc://example.org/a"`)); err != nil {
		t.Fatal(err)
	}

	e.clock.Advance(time.Minute) // less than the access token lifetime
	if err := e.svc.Deactivate(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	u, err := e.db.User(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !u.Deactivated() || !u.Erased || u.DeactivatedTS != e.clock.Now().UnixMilli() || u.PasswordHash != "" {
		t.Errorf("user after Deactivate = %+v", u)
	}
	if got := deviceIDs(t, e, "alice"); len(got) != 0 {
		t.Errorf("devices = %v, want none", got)
	}
	for _, s := range sessions {
		e.authRejected(t, s.AccessToken)
		e.refreshRejected(t, s.RefreshToken)
	}
	if fields, err := e.db.ProfileFields(ctx, "alice"); err != nil || len(fields) != 0 {
		t.Errorf("profile = %v, %v; want empty", fields, err)
	}
	_, err = e.svc.CheckPassword(ctx, "alice", "password1")
	wantMxErr(t, err, mxerr.Forbidden(""))
	_, err = e.svc.Create(ctx, accounts.NewAccount{Localpart: "alice"}, nil)
	wantMxErr(t, err, mxerr.UserInUse(""))

	e.authOK(t, bobs["D1"].AccessToken)
	if fields, _ := e.db.ProfileFields(ctx, "bob"); len(fields) != 1 {
		t.Errorf("bob's profile = %v", fields)
	}
	if err := e.svc.Deactivate(ctx, "nobody", false); err == nil {
		t.Error("deactivating an unknown user succeeded")
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	e.create(t, accounts.NewAccount{Localpart: "alice"}, nil)
	sessions := loginDevices(t, e, "alice", "D1", "D2", "D3", "D4")

	if err := e.svc.Logout(ctx, e.authOK(t, sessions["D1"].AccessToken)); err != nil {
		t.Fatal(err)
	}
	e.authRejected(t, sessions["D1"].AccessToken)
	if err := e.svc.DeleteDevices(ctx, "alice", []string{"D2", "NOPE"}); err != nil {
		t.Fatal(err)
	}
	if got := deviceIDs(t, e, "alice"); !slices.Equal(got, []string{"D3", "D4"}) {
		t.Errorf("devices = %v, want [D3 D4]", got)
	}
	if err := e.svc.LogoutAll(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		e.authRejected(t, s.AccessToken)
	}
}

func TestLastSeen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	ctx := t.Context()
	created := e.clock.Now().UnixMilli()
	sess := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{DeviceID: "D1"})
	other := e.login(t, "alice", accounts.LoginOptions{DeviceID: "D2"})

	check := func(id string, ts int64, ip, ua string) {
		t.Helper()
		d, err := e.db.Device(ctx, "alice", id)
		if err != nil {
			t.Fatal(err)
		}
		if d.LastSeenTS != ts || d.LastSeenIP != ip || d.LastSeenUserAgent != ua {
			t.Errorf("%s last seen = %d %q %q; want %d %q %q", id, d.LastSeenTS, d.LastSeenIP, d.LastSeenUserAgent, ts, ip, ua)
		}
	}
	flush := func() {
		t.Helper()
		if err := e.svc.FlushLastSeen(ctx); err != nil {
			t.Fatal(err)
		}
		if n := e.svc.PendingLastSeen(); n != 0 {
			t.Errorf("%d samples pending after flush", n)
		}
	}
	auth := func(token, ip, ua string) {
		t.Helper()
		if _, err := e.svc.Authenticate(ctx, token, ip, ua); err != nil {
			t.Fatal(err)
		}
	}
	check("D1", created, "", "")
	flush() // nothing pending is fine

	e.clock.Advance(10 * time.Second)
	seen := e.clock.Now().UnixMilli()
	auth(sess.AccessToken, "192.0.2.1", "client/1")
	auth(other.AccessToken, "192.0.2.9", "client/9")
	if n := e.svc.PendingLastSeen(); n != 2 {
		t.Fatalf("pending samples = %d, want 2", n)
	}
	check("D1", created, "", "") // not written before the flush
	flush()
	check("D1", seen, "192.0.2.1", "client/1")
	check("D2", seen, "192.0.2.9", "client/9")

	// Within a minute of the last stored sample nothing is queued.
	e.clock.Advance(59 * time.Second)
	auth(sess.AccessToken, "192.0.2.2", "client/2")
	if n := e.svc.PendingLastSeen(); n != 0 {
		t.Errorf("pending samples = %d after a request within a minute, want 0", n)
	}
	flush()
	check("D1", seen, "192.0.2.1", "client/1")

	e.clock.Advance(time.Second)
	later := e.clock.Now().UnixMilli()
	auth(sess.AccessToken, "192.0.2.3", "client/3")
	flush()
	check("D1", later, "192.0.2.3", "client/3")
	check("D2", seen, "192.0.2.9", "client/9")
}

func TestRunFlushesOnStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t, config.Auth{})
	sess := e.create(t, accounts.NewAccount{Localpart: "alice"}, &accounts.LoginOptions{DeviceID: "D1"})
	e.clock.Advance(time.Hour)
	if _, err := e.svc.Authenticate(t.Context(), sess.AccessToken, "192.0.2.7", "ua"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e.svc.Run(ctx) // returns at once, flushing what is pending
	if d, _ := e.db.Device(t.Context(), "alice", "D1"); d.LastSeenIP != "192.0.2.7" {
		t.Errorf("after Run stopped, last seen IP = %q", d.LastSeenIP)
	}
}
