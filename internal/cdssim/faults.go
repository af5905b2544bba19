package cdssim

// RevokeSessions invalidates every session but keeps the consumers, as an API restart with
// a session store wipe or an administrator killing sessions would: later calls get 401 and a
// fresh sign-in with the same consumer token succeeds.
func (s *Server) RevokeSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sessions)
	s.notifyLocked()
}
