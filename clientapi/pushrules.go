package clientapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/pushrules"
	"github.com/veche/veche/storage"
)

// registerPushRulesRoutes mounts the routes of push rules. Guests have
// none (as in Synapse; matrix-js-sdk does not ask for them as a guest).
func (a *API) registerPushRulesRoutes(rt *httpapi.Router) {
	// {$}: a pattern ending in a slash would match every path below it.
	a.handle(rt, "GET", "/pushrules/{$}", user, a.getPushRules)
	a.handle(rt, "GET", "/pushrules/global/{$}", user, a.getGlobalPushRules)
	const rule = "/pushrules/global/{kind}/{ruleId}"
	a.handle(rt, "GET", rule, user, a.getPushRule)
	a.handle(rt, "PUT", rule, user, a.putPushRule)
	a.handle(rt, "DELETE", rule, user, a.deletePushRule)
	a.handle(rt, "GET", rule+"/enabled", user, a.getPushRuleEnabled)
	a.handle(rt, "PUT", rule+"/enabled", user, a.putPushRuleEnabled)
	a.handle(rt, "GET", rule+"/actions", user, a.getPushRuleActions)
	a.handle(rt, "PUT", rule+"/actions", user, a.putPushRuleActions)
}

// getPushRules is GET /pushrules/.
func (a *API) getPushRules(r *http.Request) (any, error) {
	rs, err := a.pushRules(r)
	return rs, err
}

// getGlobalPushRules is GET /pushrules/global/.
func (a *API) getGlobalPushRules(r *http.Request) (any, error) {
	rs, err := a.pushRules(r)
	return rs.Global, err
}

// getPushRule is GET /pushrules/global/{kind}/{ruleId}.
func (a *API) getPushRule(r *http.Request) (any, error) {
	return a.findPushRule(r)
}

// getPushRuleEnabled is GET /pushrules/global/{kind}/{ruleId}/enabled.
func (a *API) getPushRuleEnabled(r *http.Request) (any, error) {
	rule, err := a.findPushRule(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.Enabled}, nil
}

// getPushRuleActions is GET /pushrules/global/{kind}/{ruleId}/actions.
func (a *API) getPushRuleActions(r *http.Request) (any, error) {
	rule, err := a.findPushRule(r)
	if err != nil {
		return nil, err
	}
	actions := rule.Actions
	if actions == nil {
		actions = []pushrules.Action{}
	}
	return map[string][]pushrules.Action{"actions": actions}, nil
}

// putPushRule is PUT /pushrules/global/{kind}/{ruleId}.
func (a *API) putPushRule(r *http.Request) (any, error) {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	if err := pushrules.ValidateRuleID(kind, ruleID); err != nil {
		return nil, pushRuleError(err)
	}
	raw, err := httpapi.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var body pushrules.RuleBody
	if err := httpapi.UnmarshalObject(raw, &body); err != nil {
		return nil, err
	}
	rule, err := body.Rule(kind, ruleID)
	if err != nil {
		return nil, pushRuleError(err)
	}
	q := r.URL.Query()
	before, after := q.Get("before"), q.Get("after")
	return struct{}{}, a.updatePushRules(r, func(c *pushrules.Changes) error {
		return c.Put(kind, rule, before, after)
	})
}

// deletePushRule is DELETE /pushrules/global/{kind}/{ruleId}.
func (a *API) deletePushRule(r *http.Request) (any, error) {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, a.updatePushRules(r, func(c *pushrules.Changes) error {
		return c.Delete(kind, ruleID)
	})
}

// putPushRuleEnabled is PUT /pushrules/global/{kind}/{ruleId}/enabled.
func (a *API) putPushRuleEnabled(r *http.Request) (any, error) {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Enabled == nil {
		return nil, mxerr.MissingParam("enabled is required")
	}
	return struct{}{}, a.updatePushRules(r, func(c *pushrules.Changes) error {
		return c.SetEnabled(kind, ruleID, *body.Enabled)
	})
}

// putPushRuleActions is PUT /pushrules/global/{kind}/{ruleId}/actions.
func (a *API) putPushRuleActions(r *http.Request) (any, error) {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	var body pushrules.RuleBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	actions, err := pushrules.ParseActions(body.Actions)
	if err != nil {
		return nil, pushRuleError(err)
	}
	return struct{}{}, a.updatePushRules(r, func(c *pushrules.Changes) error {
		return c.SetActions(kind, ruleID, actions)
	})
}

// pushRulePath reads {kind} and {ruleId}.
func pushRulePath(r *http.Request) (pushrules.Kind, string, error) {
	kind, ok := pushrules.ParseKind(r.PathValue("kind"))
	if !ok {
		return "", "", mxerr.InvalidParam("Unknown push rule kind " + r.PathValue("kind") +
			": expected override, underride, sender, room or content")
	}
	return kind, r.PathValue("ruleId"), nil
}

// pushRules is the requester's ruleset: the server-default rules with
// the user's changes.
func (a *API) pushRules(r *http.Request) (pushrules.Ruleset, error) {
	me := requester(r)
	c, err := a.pushRuleChanges(r.Context(), me.Localpart())
	if err != nil {
		return pushrules.Ruleset{}, err
	}
	return c.Apply(me.UserID.String()), nil
}

// findPushRule returns the rule named by the path, or M_NOT_FOUND.
func (a *API) findPushRule(r *http.Request) (*pushrules.Rule, error) {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	rs, err := a.pushRules(r)
	if err != nil {
		return nil, err
	}
	rule := rs.Global.Find(kind, ruleID)
	if rule == nil {
		return nil, mxerr.NotFound("The push rule was not found")
	}
	return rule, nil
}

// pushRuleChanges reads a user's stored changes. Data that cannot be read
// counts as none rather than locking the user out of their push rules:
// the next change then replaces it.
func (a *API) pushRuleChanges(ctx context.Context, localpart string) (pushrules.Changes, error) {
	stored, err := a.db.AccountDataEntry(ctx, localpart, "", pushrules.AccountDataType)
	if errors.Is(err, storage.ErrNotFound) {
		return pushrules.Changes{}, nil
	}
	if err != nil {
		return pushrules.Changes{}, err
	}
	c, err := pushrules.ParseChanges(stored)
	if err != nil {
		httpapi.Logger(ctx).WithError(err).Warn("Stored push rules are unreadable; serving the defaults")
	}
	return c, nil
}

// updatePushRules applies change to the requester's push rules and stores
// the result at a new stream position, so that /sync delivers the new
// m.push_rules to the user's devices.
func (a *API) updatePushRules(r *http.Request, change func(*pushrules.Changes) error) error {
	me := requester(r)
	userID := me.UserID.String()
	// A read-modify-write: two changes at once must not lose one another.
	defer lockUser(userID)()
	c, err := a.pushRuleChanges(r.Context(), me.Localpart())
	if err != nil {
		return err
	}
	if err := change(&c); err != nil {
		return pushRuleError(err)
	}
	content, err := c.Encode(userID)
	if err != nil {
		return err
	}
	return a.stream.Write(1, []string{userID}, func(pos int64) error {
		return a.db.PutAccountData(r.Context(), me.Localpart(), "", pushrules.AccountDataType, content, pos)
	})
}

// pushRuleError turns the pushrules package's errors into Matrix errors.
// The spec leaves most errcodes open; its one example, for a before/after
// rule that does not exist, is 400 M_UNKNOWN.
func pushRuleError(err error) error {
	var pe *pushrules.Error
	if !errors.As(err, &pe) {
		return err
	}
	msg := pe.Error()
	switch {
	case errors.Is(err, pushrules.ErrNotFound):
		return mxerr.NotFound(msg)
	case errors.Is(err, pushrules.ErrMissingField):
		return mxerr.MissingParam(msg)
	case errors.Is(err, pushrules.ErrInvalidRule):
		return mxerr.BadJSON(msg)
	case errors.Is(err, pushrules.ErrAnchorNotFound):
		return mxerr.Unknown(msg)
	}
	// ErrInvalidRuleID, ErrServerDefault.
	return mxerr.InvalidParam(msg)
}
