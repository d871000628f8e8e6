package accounts

// PendingLastSeen counts queued device activity samples, so that tests can
// tell whether Authenticate queued a write without waiting for a flush.
func (s *Service) PendingLastSeen() int {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	return len(s.seen)
}
