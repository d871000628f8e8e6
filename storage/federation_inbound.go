package storage

import (
	"context"
	"database/sql"
	"errors"
)

// InboundTxn returns the stored answer to a transaction an origin sent
// before, or ErrNotFound.
func (o ops) InboundTxn(ctx context.Context, origin, txnID string) ([]byte, error) {
	var resp string
	err := o.q.queryRow(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(resp), err
}

// PutInboundTxn records the answer to a processed transaction.
func (o ops) PutInboundTxn(ctx context.Context, origin, txnID string, response []byte, ts int64) error {
	_, err := o.q.exec(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), ts)
	return err
}

// PruneInboundTxns forgets transactions received before ts.
func (o ops) PruneInboundTxns(ctx context.Context, before int64) error {
	_, err := o.q.exec(ctx, `DELETE FROM federation_inbound_txns WHERE received_ts < $1`, before)
	return err
}
