// Package accounts owns local accounts, devices and their tokens: creating
// and deactivating users, checking passwords, issuing, refreshing and
// revoking access tokens. The client API and the admin CLI both use it.
package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// maxPasswordBytes bounds password length; longer input is refused rather
// than hashed (hashing cost grows with it).
const maxPasswordBytes = 1024

// Service manages accounts. It is safe for concurrent use.
type Service struct {
	db         *storage.DB
	serverName spec.ServerName
	hasher     *Hasher
	minPwLen   int
	auth       config.Auth
	log        logrus.FieldLogger
	now        func() time.Time

	seenMu sync.Mutex
	seen   map[deviceKey]storage.LastSeen // pending last-seen samples
	// seenWritten remembers when each device's activity was last stored so
	// that a busy device costs one write a minute, not one per request.
	seenWritten map[deviceKey]time.Time

	// OnDeviceChange, when set, is told of devices created (deleted
	// false) or deleted, after the change committed; end-to-end
	// encryption announces device list changes with it. Set it before
	// use.
	OnDeviceChange func(ctx context.Context, localpart string, deviceIDs []string, deleted bool)
}

type deviceKey struct{ localpart, deviceID string }

// lastSeenInterval is the resolution of a device's last_seen_ts.
const lastSeenInterval = time.Minute

// Deps are what the service needs.
type Deps struct {
	DB         *storage.DB
	ServerName spec.ServerName
	Password   config.Password
	Auth       config.Auth
	Log        logrus.FieldLogger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// New returns an account service.
func New(d Deps) *Service {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		// Create and Deactivate log; a caller that does not care about the
		// log must not get a nil-interface panic for it.
		l := logrus.New()
		l.SetOutput(io.Discard)
		d.Log = l
	}
	return &Service{
		db: d.DB, serverName: d.ServerName, hasher: NewHasher(d.Password.Argon2), minPwLen: d.Password.MinLength,
		auth: d.Auth, log: d.Log, now: d.Now,
		seen: map[deviceKey]storage.LastSeen{}, seenWritten: map[deviceKey]time.Time{},
	}
}

// ServerName is the server the accounts belong to.
func (s *Service) ServerName() spec.ServerName { return s.serverName }

// UserID builds the full user ID of a local localpart.
func (s *Service) UserID(localpart string) spec.UserID {
	return spec.NewUserIDOrPanic("@"+localpart+":"+string(s.serverName), true)
}

// LocalpartOf returns the localpart of a user ID on this server, or an
// error when the ID is malformed or belongs to another server.
func (s *Service) LocalpartOf(userID string) (string, error) {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return "", fmt.Errorf("invalid user ID %q", userID)
	}
	if u.Domain() != s.serverName {
		return "", fmt.Errorf("user %q is not on this server", userID)
	}
	if u.Local() == "" {
		return "", fmt.Errorf("invalid user ID %q", userID)
	}
	return u.Local(), nil
}

// CheckPasswordPolicy refuses passwords that are too short or too long.
func (s *Service) CheckPasswordPolicy(password string) error {
	if len([]rune(password)) < s.minPwLen {
		return mxerr.WeakPassword(fmt.Sprintf("Password must be at least %d characters long", s.minPwLen))
	}
	if len(password) > maxPasswordBytes {
		return mxerr.WeakPassword(fmt.Sprintf("Password must be at most %d bytes long", maxPasswordBytes))
	}
	return nil
}

// Session is what a successful login or registration returns.
type Session struct {
	UserID       spec.UserID
	DeviceID     string
	AccessToken  string
	RefreshToken string
	ExpiresIn    time.Duration // 0 when the access token does not expire
	// newDevice is set when the session created its device.
	newDevice bool
}

// LoginOptions describe the device a session is for.
type LoginOptions struct {
	// DeviceID reuses (or creates) a device with this ID; empty makes a new one.
	DeviceID string
	// DisplayName names a newly created device.
	DisplayName *string
	// Refresh asks for an expiring access token plus a refresh token.
	Refresh bool
}

// NewAccount describes an account to create.
type NewAccount struct {
	Localpart string
	// Password may be empty for accounts that cannot log in with one.
	Password    string
	Admin       bool
	Guest       bool
	UserType    string
	DisplayName string // defaults to the localpart
}

// Create makes a new account and, unless login is nil, a session for it,
// atomically. It returns mxerr.UserInUse when the localpart is taken.
func (s *Service) Create(ctx context.Context, acct NewAccount, login *LoginOptions) (*Session, error) {
	var hash string
	if acct.Password != "" {
		var err error
		if hash, err = s.hasher.Hash(acct.Password); err != nil {
			return nil, err
		}
	}
	displayName := acct.DisplayName
	if displayName == "" {
		displayName = acct.Localpart
	}
	var sess *Session
	err := s.db.Transact(ctx, func(tx *storage.Tx) error {
		if acct.Guest {
			// Admins can create numeric accounts. Skip their numbers: the
			// counter rolls back with a failed transaction, so colliding
			// would refuse every later guest too.
			for {
				n, err := tx.NextSequence(ctx, "guest")
				if err != nil {
					return err
				}
				acct.Localpart = strconv.FormatInt(n, 10)
				taken, err := tx.UserExists(ctx, acct.Localpart)
				if err != nil {
					return err
				}
				if !taken {
					break
				}
			}
			displayName = acct.Localpart
		}
		err := tx.CreateUser(ctx, storage.User{
			Localpart: acct.Localpart, PasswordHash: hash, CreatedTS: s.now().UnixMilli(),
			IsAdmin: acct.Admin, IsGuest: acct.Guest, UserType: acct.UserType,
		})
		if errors.Is(err, storage.ErrConflict) {
			return mxerr.UserInUse("User ID already taken")
		}
		if err != nil {
			return err
		}
		name, _ := json.Marshal(displayName)
		if err := tx.SetProfileField(ctx, acct.Localpart, "displayname", name); err != nil {
			return err
		}
		if login != nil {
			sess, err = s.startSession(ctx, tx, acct.Localpart, *login)
			return err
		}
		sess = &Session{UserID: s.UserID(acct.Localpart)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if sess.newDevice {
		s.deviceChange(ctx, acct.Localpart, []string{sess.DeviceID}, false)
	}
	s.log.WithField("user_id", sess.UserID.String()).WithField("guest", acct.Guest).Info("Account created")
	return sess, nil
}

// CheckPassword verifies a user's password. Unknown users, wrong passwords
// and deactivated accounts (whose password was dropped) all get the same
// M_FORBIDDEN after the same amount of work, so that the answer reveals
// nothing about which accounts exist (spec: servers may use M_FORBIDDEN
// once they can no longer authenticate a deactivated user; Synapse does).
func (s *Service) CheckPassword(ctx context.Context, localpart, password string) (storage.User, error) {
	forbidden := mxerr.Forbidden("Invalid username or password")
	if len(password) > maxPasswordBytes {
		return storage.User{}, forbidden
	}
	u, err := s.db.User(ctx, localpart)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (u.PasswordHash == "" || u.Deactivated())) {
		s.hasher.Burn(password)
		return storage.User{}, forbidden
	}
	if err != nil {
		return storage.User{}, err
	}
	ok, err := s.hasher.Verify(u.PasswordHash, password)
	if err != nil {
		return storage.User{}, fmt.Errorf("verifying password of %s: %w", localpart, err)
	}
	if !ok {
		return storage.User{}, forbidden
	}
	return u, nil
}

// Login starts a session for an account whose credentials were checked.
func (s *Service) Login(ctx context.Context, localpart string, opts LoginOptions) (*Session, error) {
	var sess *Session
	err := s.db.Transact(ctx, func(tx *storage.Tx) error {
		var err error
		sess, err = s.startSession(ctx, tx, localpart, opts)
		return err
	})
	if err == nil && sess.newDevice {
		s.deviceChange(ctx, localpart, []string{sess.DeviceID}, false)
	}
	return sess, err
}

// deviceChange calls OnDeviceChange when it is set.
func (s *Service) deviceChange(ctx context.Context, localpart string, deviceIDs []string, deleted bool) {
	if s.OnDeviceChange != nil && len(deviceIDs) > 0 {
		s.OnDeviceChange(ctx, localpart, deviceIDs, deleted)
	}
}

func (s *Service) startSession(ctx context.Context, tx *storage.Tx, localpart string, opts LoginOptions) (*Session, error) {
	now := s.now()
	deviceID := opts.DeviceID
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	created, err := tx.EnsureDevice(ctx, localpart, deviceID, opts.DisplayName, now.UnixMilli())
	if err != nil {
		return nil, err
	}
	if !created {
		// Logging in to an existing device replaces its tokens (spec, /login device_id).
		if err := tx.DeleteDeviceTokens(ctx, localpart, deviceID); err != nil {
			return nil, err
		}
	}
	sess, err := s.issueTokens(ctx, tx, localpart, deviceID, opts.Refresh, nil)
	if err != nil {
		return nil, err
	}
	sess.newDevice = created
	return sess, nil
}

// issueTokens stores a new access token (and refresh token when asked) for
// a device. supersedes is the refresh token exchanged for them, if any.
func (s *Service) issueTokens(ctx context.Context, tx *storage.Tx, localpart, deviceID string, refresh bool, supersedes []byte) (*Session, error) {
	now := s.now()
	sess := &Session{UserID: s.UserID(localpart), DeviceID: deviceID}
	access, accessHash := newToken(accessTokenPrefix)
	at := storage.AccessToken{Hash: accessHash, Localpart: localpart, DeviceID: deviceID, CreatedTS: now.UnixMilli(), Supersedes: supersedes}
	if refresh {
		rt, refreshHash := newToken(refreshTokenPrefix)
		var expires int64
		if s.auth.RefreshTokenLifetime > 0 {
			expires = now.Add(s.auth.RefreshTokenLifetime).UnixMilli()
		}
		if err := tx.InsertRefreshToken(ctx, storage.RefreshToken{Hash: refreshHash, Localpart: localpart, DeviceID: deviceID,
			CreatedTS: now.UnixMilli(), ExpiresTS: expires, Supersedes: supersedes}); err != nil {
			return nil, err
		}
		at.RefreshHash = refreshHash
		at.ExpiresTS = now.Add(s.auth.AccessTokenLifetime).UnixMilli()
		sess.RefreshToken = rt
		sess.ExpiresIn = s.auth.AccessTokenLifetime
	}
	if err := tx.InsertAccessToken(ctx, at); err != nil {
		return nil, err
	}
	sess.AccessToken = access
	return sess, nil
}

// Requester is the authenticated user and device behind a request.
type Requester struct {
	UserID    spec.UserID
	DeviceID  string
	IsGuest   bool
	IsAdmin   bool
	tokenHash []byte
}

type requesterKey struct{}

// WithRequester returns a context carrying the authenticated requester.
func WithRequester(ctx context.Context, r *Requester) context.Context {
	return context.WithValue(ctx, requesterKey{}, r)
}

// RequesterFrom returns the requester of an authenticated request, or nil.
func RequesterFrom(ctx context.Context) *Requester {
	r, _ := ctx.Value(requesterKey{}).(*Requester)
	return r
}

// Localpart is the requester's localpart.
func (r *Requester) Localpart() string { return r.UserID.Local() }

// Authenticate resolves an access token to its requester.
func (s *Service) Authenticate(ctx context.Context, token, ip, userAgent string) (*Requester, error) {
	hash := hashToken(token)
	t, err := s.db.LookupAccessToken(ctx, hash)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.UnknownToken("Unknown access token", false)
	}
	if err != nil {
		return nil, err
	}
	if t.Deactivated {
		return nil, mxerr.UnknownToken("This account has been deactivated", false)
	}
	if t.ExpiresTS != 0 && s.now().UnixMilli() >= t.ExpiresTS {
		// soft_logout: the client may refresh and keep its local state.
		return nil, mxerr.UnknownToken("Access token has expired", true)
	}
	if t.Supersedes != nil {
		// First use of a refreshed token: the refresh token it replaced,
		// and that token's access tokens, are now revoked.
		if err := s.db.Transact(ctx, func(tx *storage.Tx) error { return tx.RevokeRefreshToken(ctx, t.Supersedes) }); err != nil {
			return nil, err
		}
	}
	s.noteSeen(t.Localpart, t.DeviceID, ip, userAgent)
	return &Requester{UserID: s.UserID(t.Localpart), DeviceID: t.DeviceID, IsGuest: t.IsGuest, IsAdmin: t.IsAdmin, tokenHash: hash}, nil
}

// Refresh exchanges a refresh token for a new access and refresh token.
// The old refresh token stays valid until one of the new tokens is used.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (*Session, error) {
	hash := hashToken(refreshToken)
	var sess *Session
	err := s.db.Transact(ctx, func(tx *storage.Tx) error {
		rt, err := tx.LookupRefreshToken(ctx, hash)
		if errors.Is(err, storage.ErrNotFound) {
			return mxerr.UnknownToken("Unknown refresh token", false)
		}
		if err != nil {
			return err
		}
		if rt.ExpiresTS != 0 && s.now().UnixMilli() >= rt.ExpiresTS {
			return mxerr.UnknownToken("Refresh token has expired", false)
		}
		u, err := tx.User(ctx, rt.Localpart)
		if err != nil {
			return err
		}
		if u.Deactivated() {
			return mxerr.UnknownToken("This account has been deactivated", false)
		}
		if rt.Supersedes != nil {
			if err := tx.RevokeRefreshToken(ctx, rt.Supersedes); err != nil {
				return err
			}
		}
		// A retried exchange replaces the tokens of an earlier one.
		if err := tx.RevokeSuccessors(ctx, hash); err != nil {
			return err
		}
		sess, err = s.issueTokens(ctx, tx, rt.Localpart, rt.DeviceID, true, hash)
		return err
	})
	return sess, err
}

// Logout deletes the requester's device and its tokens.
func (s *Service) Logout(ctx context.Context, r *Requester) error {
	return s.DeleteDevices(ctx, r.Localpart(), []string{r.DeviceID})
}

// LogoutAll deletes every device of a user.
func (s *Service) LogoutAll(ctx context.Context, localpart string) error {
	var deleted []string
	err := s.db.Transact(ctx, func(tx *storage.Tx) error {
		var err error
		deleted, err = tx.DeleteDevicesExcept(ctx, localpart, "")
		return err
	})
	if err == nil {
		s.deviceChange(ctx, localpart, deleted, true)
	}
	return err
}

// DeleteDevices deletes devices (and their tokens) of a user.
func (s *Service) DeleteDevices(ctx context.Context, localpart string, deviceIDs []string) error {
	var deleted []string
	err := s.db.Transact(ctx, func(tx *storage.Tx) error {
		existing, err := tx.Devices(ctx, localpart)
		if err != nil {
			return err
		}
		for _, d := range existing {
			if slices.Contains(deviceIDs, d.DeviceID) {
				deleted = append(deleted, d.DeviceID)
			}
		}
		return tx.DeleteDevices(ctx, localpart, deleted)
	})
	if err == nil {
		s.deviceChange(ctx, localpart, deleted, true)
	}
	return err
}

// SetPassword replaces a user's password. When logoutOthers is set, every
// device except keepDevice (the one making the request, if any) is removed.
func (s *Service) SetPassword(ctx context.Context, localpart, password string, logoutOthers bool, keepDevice string) error {
	hash, err := s.hasher.Hash(password)
	if err != nil {
		return err
	}
	var deleted []string
	err = s.db.Transact(ctx, func(tx *storage.Tx) error {
		if err := tx.SetPasswordHash(ctx, localpart, hash); err != nil {
			return err
		}
		if logoutOthers {
			var err error
			deleted, err = tx.DeleteDevicesExcept(ctx, localpart, keepDevice)
			return err
		}
		return nil
	})
	if err == nil {
		s.deviceChange(ctx, localpart, deleted, true)
	}
	return err
}

// Deactivate permanently disables an account: it loses its password, its
// devices and its profile; erase also marks its messages for erasure.
func (s *Service) Deactivate(ctx context.Context, localpart string, erase bool) error {
	var deleted []string
	err := s.db.Transact(ctx, func(tx *storage.Tx) error {
		if err := tx.MarkDeactivated(ctx, localpart, erase, s.now().UnixMilli()); err != nil {
			return err
		}
		var err error
		if deleted, err = tx.DeleteDevicesExcept(ctx, localpart, ""); err != nil {
			return err
		}
		return tx.DeleteProfile(ctx, localpart)
	})
	if err == nil {
		s.deviceChange(ctx, localpart, deleted, true)
		s.log.WithField("user_id", "@"+localpart+":"+string(s.serverName)).WithField("erase", erase).Info("Account deactivated")
	}
	return err
}

// noteSeen queues a last-seen sample for a device; Run stores them.
func (s *Service) noteSeen(localpart, deviceID, ip, userAgent string) {
	k := deviceKey{localpart, deviceID}
	now := s.now()
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	if now.Sub(s.seenWritten[k]) < lastSeenInterval {
		return
	}
	s.seenWritten[k] = now
	s.seen[k] = storage.LastSeen{Localpart: localpart, DeviceID: deviceID, TS: now.UnixMilli(), IP: ip, UserAgent: userAgent}
}

// FlushLastSeen stores pending device activity.
func (s *Service) FlushLastSeen(ctx context.Context) error {
	s.seenMu.Lock()
	batch := make([]storage.LastSeen, 0, len(s.seen))
	for _, v := range s.seen {
		batch = append(batch, v)
	}
	clear(s.seen)
	// Forget old write times so the map does not grow without bound.
	cutoff := s.now().Add(-lastSeenInterval)
	for k, t := range s.seenWritten {
		if t.Before(cutoff) {
			delete(s.seenWritten, k)
		}
	}
	s.seenMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	return s.db.Transact(ctx, func(tx *storage.Tx) error { return tx.UpdateLastSeen(ctx, batch) })
}

// Run stores device activity every few seconds until ctx ends, then once
// more.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.FlushLastSeen(flushCtx); err != nil {
				s.log.WithError(err).Warn("Storing device activity failed")
			}
			cancel()
			return
		case <-t.C:
			if err := s.FlushLastSeen(ctx); err != nil && ctx.Err() == nil {
				s.log.WithError(err).Warn("Storing device activity failed")
			}
		}
	}
}
