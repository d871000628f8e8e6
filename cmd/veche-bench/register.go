package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

const (
	stageDummy = "m.login.dummy"
	stageToken = "m.login.registration_token"
	// Synapse before spec v1.2 named the token stage by its MSC.
	stageTokenUnstable = "org.matrix.msc3231.login.registration_token"
)

// registrar creates accounts the way the server allows: the shared-secret
// admin API when a secret is given, else /register's interactive auth.
type registrar struct {
	c            *client
	password     string
	token        string
	sharedSecret string
}

type sessionAnswer struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
}

// uiaAnswer is a 401 of user-interactive auth.
type uiaAnswer struct {
	Flows []struct {
		Stages []string `json:"stages"`
	} `json:"flows"`
	Session   string   `json:"session"`
	Completed []string `json:"completed"`
}

func (r *registrar) method() string {
	if r.sharedSecret != "" {
		return "shared secret (/_synapse/admin/v1/register)"
	}
	if r.token != "" {
		return "/register with m.login.registration_token"
	}
	return "/register with m.login.dummy"
}

func (r *registrar) register(ctx context.Context, localpart string) (*user, error) {
	var (
		s   sessionAnswer
		err error
	)
	if r.sharedSecret != "" {
		s, err = r.registerShared(ctx, localpart)
	} else {
		s, err = r.registerUIA(ctx, localpart)
	}
	if err != nil {
		return nil, fmt.Errorf("registering %s: %w", localpart, err)
	}
	if s.AccessToken == "" || s.UserID == "" {
		return nil, fmt.Errorf("registering %s: the answer has no user_id or access_token", localpart)
	}
	return &user{ID: s.UserID, Token: s.AccessToken}, nil
}

// registerUIA walks /register's stages: the first request learns the
// flows and the session, each following one completes the next stage of
// a flow this tool can do.
func (r *registrar) registerUIA(ctx context.Context, localpart string) (sessionAnswer, error) {
	req := map[string]any{"username": localpart, "password": r.password, "initial_device_display_name": "veche-bench"}
	var flow []string
	tried := map[string]bool{}
	for {
		var out sessionAnswer
		_, err := r.c.do(ctx, "POST", clientV3+"/register", "", req, &out)
		var ae *apiError
		if err == nil || !errors.As(err, &ae) || ae.Status != 401 {
			if ae != nil && ae.Status == 403 {
				err = fmt.Errorf("%w (registration is closed: pass --registration-token or --shared-secret)", err)
			}
			return out, err
		}
		var u uiaAnswer
		if json.Unmarshal(ae.Raw, &u) != nil || len(u.Flows) == 0 {
			return out, err
		}
		if flow == nil {
			if flow, err = r.chooseFlow(u); err != nil {
				return out, err
			}
		}
		stage := ""
		for _, st := range flow {
			if !slices.Contains(u.Completed, st) {
				stage = st
				break
			}
		}
		if stage == "" || tried[stage] {
			// The stage was attempted and refused (a wrong token), or the
			// server keeps asking after every stage: its error says why.
			return out, err
		}
		tried[stage] = true
		auth := map[string]any{"type": stage, "session": u.Session}
		if stage != stageDummy {
			auth["token"] = r.token
		}
		req["auth"] = auth
	}
}

// chooseFlow picks the shortest flow made only of stages this tool can
// complete with what it was given.
func (r *registrar) chooseFlow(u uiaAnswer) ([]string, error) {
	var best []string
	var offered []string
	for _, f := range u.Flows {
		offered = append(offered, strings.Join(f.Stages, "+"))
		ok := len(f.Stages) > 0
		for _, st := range f.Stages {
			switch st {
			case stageDummy:
			case stageToken, stageTokenUnstable:
				ok = ok && r.token != ""
			default:
				ok = false
			}
		}
		if ok && (best == nil || len(f.Stages) < len(best)) {
			best = f.Stages
		}
	}
	if best == nil {
		return nil, fmt.Errorf("the server offers registration flows [%s], none of which this tool can complete with the given flags "+
			"(--registration-token for m.login.registration_token, or --shared-secret)", strings.Join(offered, ", "))
	}
	return best, nil
}

// registerShared is Synapse's shared-secret registration, which Veche and
// Synapse both offer when a registration_shared_secret is configured.
func (r *registrar) registerShared(ctx context.Context, localpart string) (sessionAnswer, error) {
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	const path = "/_synapse/admin/v1/register"
	if _, err := r.c.do(ctx, "GET", path, "", nil, &nonce); err != nil {
		return sessionAnswer{}, err
	}
	var out sessionAnswer
	_, err := r.c.do(ctx, "POST", path, "", map[string]any{
		"nonce": nonce.Nonce, "username": localpart, "password": r.password, "admin": false,
		"mac": sharedSecretMAC(r.sharedSecret, nonce.Nonce, localpart, r.password),
	}, &out)
	return out, err
}

// sharedSecretMAC is the hex HMAC-SHA1 of nonce, user, password and
// "notadmin", NUL-separated, as Synapse's register_new_matrix_user sends.
func sharedSecretMAC(secret, nonce, user, password string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00notadmin"))
	return hex.EncodeToString(m.Sum(nil))
}
