package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/storage"
)

// destination is the in-memory state of one remote server's queue. All
// fields are guarded by Sender.mu; the worker alone does I/O for it.
type destination struct {
	name    spec.ServerName
	running bool // a worker goroutine exists
	// pending says that work may have arrived since the worker last
	// looked, so that it looks again before it exits.
	pending bool
	// reset asks the worker to forget the backoff (Wake).
	reset bool
	// kick cuts a backoff wait short.
	kick chan struct{}

	failures int       // consecutive failed transactions
	retryAt  time.Time // no attempt before this

	ephemeral []ephemeralEDU
	// held is a transaction that failed and will be retried as it is,
	// with the same ID, so that the receiver's deduplication works.
	held *batch
}

type ephemeralEDU struct {
	edu gomatrixserverlib.EDU
	// key identifies what the EDU is about (a user typing in a room): a
	// newer EDU with the same key replaces a waiting one.
	key    string
	queued time.Time
}

// batch is one transaction's content and the queue rows it came from.
type batch struct {
	txnID  gomatrixserverlib.TransactionID
	pdus   []json.RawMessage
	edus   []gomatrixserverlib.EDU
	pduIDs []int64
	eduIDs []int64
}

// dest returns the state of a destination, creating it; s.mu is held.
func (s *Sender) dest(name spec.ServerName) *destination {
	d := s.dests[name]
	if d == nil {
		d = &destination{name: name, kick: make(chan struct{}, 1)}
		s.dests[name] = d
	}
	return d
}

// notifyLocked tells the destination's worker that there is work,
// starting it if needed; s.mu is held.
func (s *Sender) notifyLocked(name spec.ServerName) {
	d := s.dest(name)
	d.pending = true
	s.startLocked(d)
}

func (s *Sender) startLocked(d *destination) {
	if d.running || !s.running {
		return
	}
	d.running = true
	s.wg.Add(1)
	go s.work(d)
}

func (d *destination) addEphemeral(edu gomatrixserverlib.EDU, key string, now time.Time) {
	if key != "" {
		for i, e := range d.ephemeral {
			if e.key == key {
				d.ephemeral = append(d.ephemeral[:i], d.ephemeral[i+1:]...)
				break
			}
		}
	}
	if len(d.ephemeral) >= maxEphemeral {
		d.ephemeral = d.ephemeral[1:]
	}
	d.ephemeral = append(d.ephemeral, ephemeralEDU{edu: edu, key: key, queued: now})
}

// Wake ends a destination's backoff and retries it at once: call it when
// the server contacts us, which shows it is up again (as Synapse does).
// It costs nothing for a destination that is not backing off.
func (s *Sender) Wake(name spec.ServerName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dests[name]
	if d == nil || (d.failures == 0 && d.retryAt.IsZero()) {
		return
	}
	d.reset = true
	select {
	case d.kick <- struct{}{}:
	default:
	}
	s.startLocked(d)
}

// work is a destination's worker: it sends batches until the queue is
// empty, waiting out the backoff after failures.
func (s *Sender) work(d *destination) {
	defer s.wg.Done()
	log := s.log.WithField("destination", d.name)
	for {
		s.mu.Lock()
		cleared := false
		if d.reset {
			d.reset = false
			cleared = d.failures > 0
			d.failures, d.retryAt = 0, time.Time{}
		}
		wait := d.retryAt.Sub(s.now())
		s.mu.Unlock()
		if cleared {
			log.Info("Destination is back; retrying now")
			s.saveBackoff(log, d.name, 0, time.Time{})
		}
		if wait > 0 {
			select {
			case <-s.after(wait):
			case <-d.kick:
			case <-s.ctx.Done():
				s.exit(d)
				return
			}
			continue
		}
		if s.ctx.Err() != nil {
			s.exit(d)
			return
		}
		b, err := s.nextBatch(d)
		if err != nil {
			if s.ctx.Err() == nil {
				log.WithError(err).Warn("Reading the federation queue failed")
				s.mu.Lock()
				d.retryAt = s.now().Add(s.minWait)
				s.mu.Unlock()
			}
			continue
		}
		if b == nil {
			s.mu.Lock()
			if d.pending {
				s.mu.Unlock()
				continue
			}
			d.running = false
			if d.failures == 0 && d.held == nil && len(d.ephemeral) == 0 {
				delete(s.dests, d.name)
			}
			s.mu.Unlock()
			return
		}
		s.send(log, d, b)
	}
}

func (s *Sender) exit(d *destination) {
	s.mu.Lock()
	d.running = false
	s.mu.Unlock()
}

// nextBatch returns the transaction to send next: the held one after a
// failure, or a new one from the queue; nil when there is nothing.
func (s *Sender) nextBatch(d *destination) (*batch, error) {
	s.mu.Lock()
	if d.held != nil {
		b := d.held
		s.mu.Unlock()
		return b, nil
	}
	d.pending = false
	s.mu.Unlock()
	for {
		pdus, err := s.db.QueuedPDUs(s.ctx, string(d.name), maxPDUs)
		if err != nil {
			return nil, err
		}
		edus, err := s.db.QueuedEDUs(s.ctx, string(d.name), maxEDUs)
		if err != nil {
			return nil, err
		}
		b := &batch{}
		for _, p := range pdus {
			b.pduIDs = append(b.pduIDs, p.ID)
			if js := s.pduJSON(d, p); js != nil {
				b.pdus = append(b.pdus, js)
			}
		}
		s.mu.Lock()
		now := s.now()
		var fresh []ephemeralEDU
		for _, e := range d.ephemeral {
			if now.Sub(e.queued) < ephemeralTTL {
				fresh = append(fresh, e)
			}
		}
		// Ephemeral and persistent EDUs share the limit; each kind is
		// promised half when both have more than that.
		nEph := min(len(fresh), maxEDUs-min(len(edus), maxEDUs/2))
		nPer := min(len(edus), maxEDUs-nEph)
		d.ephemeral = fresh[nEph:]
		s.mu.Unlock()
		size := 0
		for _, p := range b.pdus {
			size += len(p)
		}
		for _, e := range edus[:nPer] {
			// Big EDUs (to-device messages up to a client request's size)
			// wait for the next transaction rather than push this one past
			// what receivers accept.
			if size += len(e.Content); size > maxTxnBytes && len(b.pdus)+len(b.edus) > 0 {
				break
			}
			b.eduIDs = append(b.eduIDs, e.ID)
			b.edus = append(b.edus, gomatrixserverlib.EDU{Type: e.Type, Content: e.Content})
		}
		for _, e := range fresh[:nEph] {
			b.edus = append(b.edus, e.edu)
		}
		for i := range b.edus {
			b.edus[i].Origin, b.edus[i].Destination = string(s.name), string(d.name)
		}
		if len(b.pdus) > 0 || len(b.edus) > 0 {
			b.txnID = gomatrixserverlib.TransactionID(fmt.Sprintf("%s-%d", s.epoch, s.seq.Add(1)))
			return b, nil
		}
		if len(b.pduIDs) == 0 {
			return nil, nil
		}
		// Only rows of events that no longer exist: drop them and look
		// again.
		if err := s.db.DeleteQueued(s.ctx, b.pduIDs, nil); err != nil {
			return nil, err
		}
	}
}

// pduJSON is the event to send: as stored, or in its redacted form when
// it was redacted while it waited (everyone must see it redacted); nil to
// leave it out.
func (s *Sender) pduJSON(d *destination, p storage.QueuedPDU) json.RawMessage {
	if p.JSON == nil || !p.Redacted {
		return p.JSON
	}
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(p.RoomVersion))
	if err == nil {
		var js []byte
		if js, err = ver.RedactEventJSON(p.JSON); err == nil {
			return js
		}
	}
	s.log.WithError(err).WithField("destination", d.name).WithField("event_nid", p.EventNID).Warn("Redacting a queued event failed; leaving it out")
	return nil
}

// send makes one attempt at a transaction and records the outcome.
func (s *Sender) send(log logrus.FieldLogger, d *destination, b *batch) {
	s.mu.Lock()
	attempt := d.failures + 1
	s.mu.Unlock()
	log = log.WithField("txn_id", b.txnID).WithField("pdus", len(b.pdus)).WithField("edus", len(b.edus)).WithField("attempt", attempt)
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		s.hold(d, b)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	resp, err := s.client.SendTransaction(ctx, gomatrixserverlib.Transaction{
		TransactionID: b.txnID, Origin: s.name, Destination: d.name, OriginServerTS: spec.AsTimestamp(s.now()),
		PDUs: b.pdus, EDUs: b.edus,
	})
	cancel()
	<-s.sem
	if s.ctx.Err() != nil {
		// Stopping: the attempt says nothing about the destination.
		s.hold(d, b)
		return
	}
	switch {
	case err == nil:
		// A 200 is success even when the receiver refused some PDUs
		// (spec): those are its verdict, and sending them again would
		// get the same one.
		for id, r := range resp.PDUs {
			if r.Error != "" {
				log.WithField("event_id", id).WithField("error", r.Error).Info("Destination did not accept an event")
			}
		}
		s.forget(log, b)
		s.mu.Lock()
		d.held = nil
		cleared := d.failures > 0
		d.failures, d.retryAt = 0, time.Time{}
		s.mu.Unlock()
		if cleared {
			s.saveBackoff(log, d.name, 0, time.Time{})
			log.Info("Destination is reachable again")
		}
		log.Debug("Sent transaction")
	case permanent(err):
		// The receiver refuses this transaction as such: the same
		// bytes would be refused forever. Give it up rather than block
		// the queue; still back off, in case it refuses us as a whole.
		log.WithError(err).Warn("Destination refused the transaction; dropping it")
		s.forget(log, b)
		s.mu.Lock()
		d.held = nil
		s.mu.Unlock()
		s.failed(log.WithError(err), d)
	default:
		s.hold(d, b)
		s.failed(log.WithError(err), d)
	}
}

func (s *Sender) hold(d *destination, b *batch) {
	s.mu.Lock()
	d.held = b
	s.mu.Unlock()
}

// forget deletes a batch's rows from the queue. If that fails they will
// be sent again, which receivers handle: PDUs are deduplicated by event
// ID and receipts are idempotent.
func (s *Sender) forget(log logrus.FieldLogger, b *batch) {
	if err := s.db.DeleteQueued(s.ctx, b.pduIDs, b.eduIDs); err != nil {
		log.WithError(err).Warn("Removing sent events from the federation queue failed")
	}
}

// failed counts a failure and schedules the next attempt.
func (s *Sender) failed(log logrus.FieldLogger, d *destination) {
	s.mu.Lock()
	d.failures++
	delay := s.backoff(d.failures)
	d.retryAt = s.now().Add(delay)
	failures, retryAt := d.failures, d.retryAt
	s.mu.Unlock()
	log.WithField("backoff", delay).Warn("Sending to destination failed; backing off")
	s.saveBackoff(log, d.name, failures, retryAt)
}

// backoff is the delay after the given number of consecutive failures:
// MinBackoff doubling up to MaxBackoff, spread by ±20% so that the
// destinations of one outage do not retry in lockstep.
func (s *Sender) backoff(failures int) time.Duration {
	d := s.minWait
	for i := 1; i < failures && d < s.maxWait; i++ {
		d *= 2
	}
	d = min(d, s.maxWait)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (s *Sender) saveBackoff(log logrus.FieldLogger, name spec.ServerName, failures int, retryAt time.Time) {
	b := storage.DestinationBackoff{Destination: string(name), Failures: failures}
	if failures > 0 {
		b.RetryAtTS = retryAt.UnixMilli()
	}
	if err := s.db.SetFederationBackoff(s.ctx, b); err != nil && s.ctx.Err() == nil {
		log.WithError(err).Warn("Saving the destination's backoff failed")
	}
}

// permanent tells whether a failed transaction would fail again as it
// is: the receiver answered with a client error other than those that
// mean "not now" — 401 (it may not have our keys yet), 404 (the server
// may be down or being set up), 408 and 429 are retried.
func permanent(err error) bool {
	var h gomatrix.HTTPError
	if !errors.As(err, &h) {
		return false
	}
	switch h.Code {
	case http.StatusUnauthorized, http.StatusNotFound, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return h.Code >= 400 && h.Code < 500
}
