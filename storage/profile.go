package storage

import (
	"context"
	"encoding/json"
)

// ProfileFields returns every profile field of a user as raw JSON values.
func (o ops) ProfileFields(ctx context.Context, localpart string) (map[string]json.RawMessage, error) {
	rows, err := o.q.query(ctx, `SELECT field, value_json FROM accounts_profile_fields WHERE localpart = $1`, localpart)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = json.RawMessage(v)
	}
	return out, rows.Err()
}

// SetProfileField stores one field's JSON value.
func (o ops) SetProfileField(ctx context.Context, localpart, field string, value json.RawMessage) error {
	_, err := o.q.exec(ctx, `INSERT INTO accounts_profile_fields (localpart, field, value_json) VALUES ($1, $2, $3)
		ON CONFLICT (localpart, field) DO UPDATE SET value_json = excluded.value_json`, localpart, field, string(value))
	return err
}

// DeleteProfileField removes one field; a missing field is not an error.
func (o ops) DeleteProfileField(ctx context.Context, localpart, field string) error {
	_, err := o.q.exec(ctx, `DELETE FROM accounts_profile_fields WHERE localpart = $1 AND field = $2`, localpart, field)
	return err
}

// DeleteProfile removes every profile field of a user.
func (o ops) DeleteProfile(ctx context.Context, localpart string) error {
	_, err := o.q.exec(ctx, `DELETE FROM accounts_profile_fields WHERE localpart = $1`, localpart)
	return err
}
