package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// User is a row of accounts_users.
type User struct {
	Localpart string
	// PasswordHash is empty when the account cannot log in with a password.
	PasswordHash  string
	CreatedTS     int64
	IsAdmin       bool
	IsGuest       bool
	UserType      string
	DeactivatedTS int64 // 0 while active
	Erased        bool
}

// Deactivated reports whether the account was deactivated.
func (u User) Deactivated() bool { return u.DeactivatedTS != 0 }

// NextSequence advances the named counter and returns its new value. The
// row lock it takes is held to commit, so values are handed out in commit
// order — readers never see position N+1 before N.
func (o ops) NextSequence(ctx context.Context, name string) (int64, error) {
	var v int64
	err := o.q.writeRow(ctx, `UPDATE storage_sequences SET value = value + 1 WHERE name = $1 RETURNING value`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("storage: unknown sequence %q", name)
	}
	return v, err
}

// CurrentSequence returns the named counter's current value.
func (o ops) CurrentSequence(ctx context.Context, name string) (int64, error) {
	var v int64
	err := o.q.queryRow(ctx, `SELECT value FROM storage_sequences WHERE name = $1`, name).Scan(&v)
	return v, err
}

// CreateUser inserts a new account. It returns ErrConflict when the
// localpart is taken.
func (o ops) CreateUser(ctx context.Context, u User) error {
	res, err := o.q.exec(ctx, `INSERT INTO accounts_users (localpart, password_hash, created_ts, is_admin, is_guest, user_type)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (localpart) DO NOTHING`,
		u.Localpart, nullString(u.PasswordHash), u.CreatedTS, u.IsAdmin, u.IsGuest, nullString(u.UserType))
	return insertedOne(res, err)
}

// User returns the account with the given localpart, or ErrNotFound.
func (o ops) User(ctx context.Context, localpart string) (User, error) {
	var u User
	var hash, userType sql.NullString
	var deact sql.NullInt64
	err := o.q.queryRow(ctx, `SELECT localpart, password_hash, created_ts, is_admin, is_guest, user_type, deactivated_ts, erased
		FROM accounts_users WHERE localpart = $1`, localpart).
		Scan(&u.Localpart, &hash, &u.CreatedTS, &u.IsAdmin, &u.IsGuest, &userType, &deact, &u.Erased)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	u.PasswordHash, u.UserType, u.DeactivatedTS = hash.String, userType.String, deact.Int64
	return u, err
}

// UserExists reports whether the localpart is taken (active or not).
func (o ops) UserExists(ctx context.Context, localpart string) (bool, error) {
	var n int
	err := o.q.queryRow(ctx, `SELECT COUNT(*) FROM accounts_users WHERE localpart = $1`, localpart).Scan(&n)
	return n > 0, err
}

// SetPasswordHash replaces an account's password hash.
func (o ops) SetPasswordHash(ctx context.Context, localpart, hash string) error {
	return expectOne(o.q.exec(ctx, `UPDATE accounts_users SET password_hash = $1 WHERE localpart = $2`, nullString(hash), localpart))
}

// SetAdmin grants or removes server admin rights.
func (o ops) SetAdmin(ctx context.Context, localpart string, admin bool) error {
	return expectOne(o.q.exec(ctx, `UPDATE accounts_users SET is_admin = $1 WHERE localpart = $2`, admin, localpart))
}

// MarkDeactivated deactivates an account: it can no longer log in, and its
// password is dropped. Devices and tokens are removed by the caller in the
// same transaction.
func (o ops) MarkDeactivated(ctx context.Context, localpart string, erase bool, ts int64) error {
	return expectOne(o.q.exec(ctx, `UPDATE accounts_users SET deactivated_ts = $1, erased = $2, password_hash = NULL
		WHERE localpart = $3`, ts, erase, localpart))
}

// CountUsers returns how many accounts exist (active, not guests).
func (o ops) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	err := o.q.queryRow(ctx, `SELECT COUNT(*) FROM accounts_users WHERE deactivated_ts IS NULL AND is_guest = FALSE`).Scan(&n)
	return n, err
}

// Device is a row of accounts_devices.
type Device struct {
	Localpart         string
	DeviceID          string
	DisplayName       *string
	CreatedTS         int64
	LastSeenTS        int64
	LastSeenIP        string
	LastSeenUserAgent string
}

// EnsureDevice creates the device if it does not exist. A display name is
// only set on creation. It reports whether the device was created.
func (o ops) EnsureDevice(ctx context.Context, localpart, deviceID string, displayName *string, ts int64) (bool, error) {
	res, err := o.q.exec(ctx, `INSERT INTO accounts_devices (localpart, device_id, display_name, created_ts, last_seen_ts)
		VALUES ($1, $2, $3, $4, $4) ON CONFLICT (localpart, device_id) DO NOTHING`, localpart, deviceID, displayName, ts)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

const deviceColumns = `localpart, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent`

func scanDevice(sc interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var name, ip, ua sql.NullString
	var seen sql.NullInt64
	err := sc.Scan(&d.Localpart, &d.DeviceID, &name, &d.CreatedTS, &seen, &ip, &ua)
	if name.Valid {
		d.DisplayName = &name.String
	}
	d.LastSeenTS, d.LastSeenIP, d.LastSeenUserAgent = seen.Int64, ip.String, ua.String
	return d, err
}

// Device returns one device, or ErrNotFound.
func (o ops) Device(ctx context.Context, localpart, deviceID string) (Device, error) {
	d, err := scanDevice(o.q.queryRow(ctx, `SELECT `+deviceColumns+` FROM accounts_devices
		WHERE localpart = $1 AND device_id = $2`, localpart, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, ErrNotFound
	}
	return d, err
}

// Devices lists a user's devices ordered by device ID.
func (o ops) Devices(ctx context.Context, localpart string) ([]Device, error) {
	rows, err := o.q.query(ctx, `SELECT `+deviceColumns+` FROM accounts_devices WHERE localpart = $1 ORDER BY device_id`, localpart)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// RenameDevice sets a device's display name; ErrNotFound if it is unknown.
func (o ops) RenameDevice(ctx context.Context, localpart, deviceID string, name *string) error {
	return expectOne(o.q.exec(ctx, `UPDATE accounts_devices SET display_name = $1 WHERE localpart = $2 AND device_id = $3`,
		name, localpart, deviceID))
}

// DeleteDevices removes the listed devices and, through foreign keys, their
// tokens. Unknown device IDs are ignored.
func (o ops) DeleteDevices(ctx context.Context, localpart string, deviceIDs []string) error {
	for _, id := range deviceIDs {
		if _, err := o.q.exec(ctx, `DELETE FROM accounts_devices WHERE localpart = $1 AND device_id = $2`, localpart, id); err != nil {
			return err
		}
	}
	return nil
}

// DeleteDevicesExcept removes every device of the user except keep (which
// may be empty to remove them all). It returns the deleted device IDs. Run
// it in a transaction so that a device created meanwhile is not missed.
func (o ops) DeleteDevicesExcept(ctx context.Context, localpart, keep string) ([]string, error) {
	rows, err := o.q.query(ctx, `SELECT device_id FROM accounts_devices WHERE localpart = $1 AND device_id <> $2`, localpart, keep)
	if err != nil {
		return nil, err
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return nil, err
	}
	return ids, o.DeleteDevices(ctx, localpart, ids)
}

// LastSeen is a device activity sample.
type LastSeen struct {
	Localpart, DeviceID string
	TS                  int64
	IP, UserAgent       string
}

// UpdateLastSeen records device activity samples.
func (o ops) UpdateLastSeen(ctx context.Context, samples []LastSeen) error {
	for _, s := range samples {
		if _, err := o.q.exec(ctx, `UPDATE accounts_devices SET last_seen_ts = $1, last_seen_ip = $2, last_seen_user_agent = $3
			WHERE localpart = $4 AND device_id = $5`, s.TS, s.IP, s.UserAgent, s.Localpart, s.DeviceID); err != nil {
			return err
		}
	}
	return nil
}

// AccessToken is a row of accounts_access_tokens.
type AccessToken struct {
	Hash        []byte
	Localpart   string
	DeviceID    string
	CreatedTS   int64
	ExpiresTS   int64  // 0: never
	RefreshHash []byte // the refresh token issued with it, if any
	Supersedes  []byte // the refresh token to revoke on first use, if any
}

// InsertAccessToken stores a new access token.
func (o ops) InsertAccessToken(ctx context.Context, t AccessToken) error {
	_, err := o.q.exec(ctx, `INSERT INTO accounts_access_tokens (token_hash, localpart, device_id, created_ts, expires_ts, refresh_hash, supersedes)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, t.Hash, t.Localpart, t.DeviceID, t.CreatedTS, nullInt(t.ExpiresTS), t.RefreshHash, t.Supersedes)
	return err
}

// TokenOwner is an access token together with its account's flags, as
// needed to authenticate a request.
type TokenOwner struct {
	AccessToken
	IsGuest     bool
	IsAdmin     bool
	Deactivated bool
}

// LookupAccessToken finds the token with this hash, or ErrNotFound.
func (o ops) LookupAccessToken(ctx context.Context, hash []byte) (TokenOwner, error) {
	var t TokenOwner
	var expires, deact sql.NullInt64
	err := o.q.queryRow(ctx, `SELECT t.localpart, t.device_id, t.created_ts, t.expires_ts, t.refresh_hash, t.supersedes,
			u.is_guest, u.is_admin, u.deactivated_ts
		FROM accounts_access_tokens t JOIN accounts_users u ON u.localpart = t.localpart
		WHERE t.token_hash = $1`, hash).
		Scan(&t.Localpart, &t.DeviceID, &t.CreatedTS, &expires, &t.RefreshHash, &t.Supersedes, &t.IsGuest, &t.IsAdmin, &deact)
	if errors.Is(err, sql.ErrNoRows) {
		return TokenOwner{}, ErrNotFound
	}
	t.Hash, t.ExpiresTS, t.Deactivated = hash, expires.Int64, deact.Valid
	return t, err
}

// DeleteAccessToken removes one access token.
func (o ops) DeleteAccessToken(ctx context.Context, hash []byte) error {
	_, err := o.q.exec(ctx, `DELETE FROM accounts_access_tokens WHERE token_hash = $1`, hash)
	return err
}

// DeleteDeviceTokens removes every access and refresh token of a device.
func (o ops) DeleteDeviceTokens(ctx context.Context, localpart, deviceID string) error {
	if _, err := o.q.exec(ctx, `DELETE FROM accounts_access_tokens WHERE localpart = $1 AND device_id = $2`, localpart, deviceID); err != nil {
		return err
	}
	_, err := o.q.exec(ctx, `DELETE FROM accounts_refresh_tokens WHERE localpart = $1 AND device_id = $2`, localpart, deviceID)
	return err
}

// RefreshToken is a row of accounts_refresh_tokens.
type RefreshToken struct {
	Hash       []byte
	Localpart  string
	DeviceID   string
	CreatedTS  int64
	ExpiresTS  int64 // 0: never
	Supersedes []byte
}

// InsertRefreshToken stores a new refresh token.
func (o ops) InsertRefreshToken(ctx context.Context, t RefreshToken) error {
	_, err := o.q.exec(ctx, `INSERT INTO accounts_refresh_tokens (token_hash, localpart, device_id, created_ts, expires_ts, supersedes)
		VALUES ($1, $2, $3, $4, $5, $6)`, t.Hash, t.Localpart, t.DeviceID, t.CreatedTS, nullInt(t.ExpiresTS), t.Supersedes)
	return err
}

// LookupRefreshToken finds a refresh token by hash, or ErrNotFound. In a
// transaction on PostgreSQL it locks the row, so that two exchanges of the
// same token run one after the other (SQLite has a single writer anyway).
func (o ops) LookupRefreshToken(ctx context.Context, hash []byte) (RefreshToken, error) {
	var t RefreshToken
	var expires sql.NullInt64
	err := o.q.writeRow(ctx, `SELECT localpart, device_id, created_ts, expires_ts, supersedes
		FROM accounts_refresh_tokens WHERE token_hash = $1`+o.forUpdate(), hash).
		Scan(&t.Localpart, &t.DeviceID, &t.CreatedTS, &expires, &t.Supersedes)
	if errors.Is(err, sql.ErrNoRows) {
		return RefreshToken{}, ErrNotFound
	}
	t.Hash, t.ExpiresTS = hash, expires.Int64
	return t, err
}

// RevokeRefreshToken deletes a refresh token and the access tokens issued
// with it, and clears every pointer to it.
func (o ops) RevokeRefreshToken(ctx context.Context, hash []byte) error {
	stmts := []string{
		`DELETE FROM accounts_access_tokens WHERE refresh_hash = $1`,
		`DELETE FROM accounts_refresh_tokens WHERE token_hash = $1`,
		`UPDATE accounts_access_tokens SET supersedes = NULL WHERE supersedes = $1`,
		`UPDATE accounts_refresh_tokens SET supersedes = NULL WHERE supersedes = $1`,
	}
	for _, s := range stmts {
		if _, err := o.q.exec(ctx, s, hash); err != nil {
			return err
		}
	}
	return nil
}

// RevokeSuccessors deletes the tokens issued in exchange for the refresh
// token hash that have not been used yet (a retried /refresh replaces them).
func (o ops) RevokeSuccessors(ctx context.Context, hash []byte) error {
	if _, err := o.q.exec(ctx, `DELETE FROM accounts_access_tokens WHERE supersedes = $1`, hash); err != nil {
		return err
	}
	_, err := o.q.exec(ctx, `DELETE FROM accounts_refresh_tokens WHERE supersedes = $1`, hash)
	return err
}

// insertedOne turns an INSERT … ON CONFLICT DO NOTHING result into
// ErrConflict when the row existed.
func insertedOne(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrConflict
	}
	return nil
}

func expectOne(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }
func nullInt(v int64) sql.NullInt64      { return sql.NullInt64{Int64: v, Valid: v != 0} }
