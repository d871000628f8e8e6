package clientapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/mxerr"
)

// User-interactive authentication (spec: "User-Interactive Authentication
// API"). Sessions live in memory: they are short-lived and a restart only
// makes a client start its auth dance again.

const (
	stageDummy             = "m.login.dummy"
	stagePassword          = "m.login.password"
	stageRegistrationToken = "m.login.registration_token"

	uiaSessionLifetime = 15 * time.Minute
)

type uiaSession struct {
	id string
	// op binds the session to one operation (and user) so that a session
	// completed for one request cannot authorize another.
	op        string
	completed []string
	expires   time.Time
	// result is kept once the operation succeeded, so that a retry with the
	// same completed session gets the same answer (spec: completed stages
	// cannot be retried).
	result any
}

type uiaSessions struct {
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]*uiaSession
}

func newUIASessions(now func() time.Time) *uiaSessions {
	return &uiaSessions{now: now, sessions: map[string]*uiaSession{}}
}

func (s *uiaSessions) create(op string) *uiaSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, sess := range s.sessions {
		if now.After(sess.expires) {
			delete(s.sessions, id)
		}
	}
	sess := &uiaSession{id: accounts.NewSecret(), op: op, expires: now.Add(uiaSessionLifetime)}
	s.sessions[sess.id] = sess
	return sess
}

func (s *uiaSessions) get(id string) *uiaSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[id]
	if sess == nil || s.now().After(sess.expires) {
		delete(s.sessions, id)
		return nil
	}
	return sess
}

// complete records a finished stage.
func (s *uiaSessions) complete(sess *uiaSession, stage string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(sess.completed, stage) {
		sess.completed = append(sess.completed, stage)
	}
}

func (s *uiaSessions) setResult(sess *uiaSession, result any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess.result = result
}

func (s *uiaSessions) snapshot(sess *uiaSession) (completed []string, result any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(sess.completed), sess.result
}

// finishedResult returns the stored answer when raw names a session of op
// that already completed its operation, so that a client retrying a
// request whose answer it lost gets that answer again.
func (s *uiaSessions) finishedResult(raw json.RawMessage, op string) any {
	var auth struct {
		Session string `json:"session"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &auth) != nil || auth.Session == "" {
		return nil
	}
	sess := s.get(auth.Session)
	if sess == nil || sess.op != op {
		return nil
	}
	_, result := s.snapshot(sess)
	return result
}

// uiaChallenge is the 401 answer that tells a client which stages remain.
type uiaChallenge struct {
	Flows     []uiaFlow                 `json:"flows"`
	Params    map[string]map[string]any `json:"params"`
	Session   string                    `json:"session"`
	Completed []string                  `json:"completed,omitempty"`
	// failure, when set, adds errcode and error: a stage was attempted and
	// failed, and the client may try again.
	failure *mxerr.Error
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

func (c *uiaChallenge) Error() string { return "user-interactive auth required" }

func (c *uiaChallenge) Write(w http.ResponseWriter) {
	body, _ := json.Marshal(c)
	if c.failure != nil {
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		m["errcode"], m["error"] = c.failure.ErrCode, c.failure.Message
		body, _ = json.Marshal(m)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(body)
}

// authDict is the "auth" object of a UIA request.
type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Password   string          `json:"password"`
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"` // deprecated form of identifier
	Token      string          `json:"token"`
}

type userIdentifier struct {
	Type    string `json:"type"`
	User    string `json:"user"`
	Medium  string `json:"medium"`
	Address string `json:"address"`
}

// uiaRequest describes one UIA-protected operation.
type uiaRequest struct {
	// op names the operation; with the user it binds the session.
	op    string
	flows [][]string
	// user is the authenticated caller, for m.login.password.
	user *accounts.Requester
}

// interactiveAuth runs one round of user-interactive auth. It returns the
// session once a flow is complete; otherwise an error to send (a 401
// challenge or a plain Matrix error).
func (a *API) interactiveAuth(r *http.Request, raw json.RawMessage, req uiaRequest) (*uiaSession, error) {
	op := req.op
	if req.user != nil {
		op += " " + req.user.UserID.String()
	}
	var auth authDict
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &auth); err != nil {
			return nil, mxerr.BadJSON("auth must be an object with string fields")
		}
	}
	var sess *uiaSession
	if auth.Session != "" {
		if sess = a.uia.get(auth.Session); sess == nil {
			return nil, mxerr.Unknown("Unknown or expired auth session").With("session", auth.Session)
		}
		if sess.op != op {
			return nil, mxerr.Forbidden("The requested operation changed during the authentication session")
		}
	} else {
		sess = a.uia.create(op)
	}
	challenge := func(failure *mxerr.Error) error {
		completed, _ := a.uia.snapshot(sess)
		c := &uiaChallenge{Session: sess.id, Params: map[string]map[string]any{}, Completed: completed, failure: failure}
		for _, f := range req.flows {
			c.Flows = append(c.Flows, uiaFlow{Stages: f})
		}
		return c
	}
	if auth.Type != "" {
		offered := false
		for _, f := range req.flows {
			offered = offered || slices.Contains(f, auth.Type)
		}
		if !offered {
			return nil, challenge(mxerr.Unknown("Authentication type " + auth.Type + " is not offered here"))
		}
		if err := a.attemptStage(r, auth, req); err != nil {
			var me *mxerr.Error
			if errors.As(err, &me) && me.Status != http.StatusTooManyRequests {
				return nil, challenge(me)
			}
			return nil, err
		}
		a.uia.complete(sess, auth.Type)
	}
	completed, _ := a.uia.snapshot(sess)
	for _, f := range req.flows {
		if containsAll(completed, f) {
			return sess, nil
		}
	}
	return nil, challenge(nil)
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// attemptStage checks the credentials of one stage.
func (a *API) attemptStage(r *http.Request, auth authDict, req uiaRequest) error {
	switch auth.Type {
	case stageDummy:
		return nil
	case stageRegistrationToken:
		want := a.cfg.Registration.Token
		if want == "" || subtle.ConstantTimeCompare([]byte(auth.Token), []byte(want)) != 1 {
			return mxerr.Unauthorized("Invalid registration token")
		}
		return nil
	case stagePassword:
		if req.user == nil {
			return mxerr.Forbidden("Password authentication needs an authenticated user")
		}
		localpart, err := a.identifiedLocalpart(auth.Identifier, auth.User)
		if err != nil {
			return err
		}
		if localpart != req.user.Localpart() {
			return mxerr.Forbidden("The identified user is not the one making the request")
		}
		return a.checkPasswordLimited(r, localpart, auth.Password)
	default:
		return mxerr.Unknown("Unsupported authentication type")
	}
}

// checkPasswordLimited verifies a password, counting failures against the
// account so that guessing is slow.
func (a *API) checkPasswordLimited(r *http.Request, localpart, password string) error {
	if ok, wait := a.limits.loginFailures.Peek(localpart); !ok {
		return mxerr.LimitExceeded(wait)
	}
	_, err := a.accounts.CheckPassword(r.Context(), localpart, password)
	if errors.Is(err, mxerr.Forbidden("")) {
		a.limits.loginFailures.Allow(localpart)
	}
	return err
}
