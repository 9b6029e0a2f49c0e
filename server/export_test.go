package server

import "github.com/prometheus/client_golang/prometheus"

// MetricsCollector returns the server's collector, which Close unregisters,
// so tests can read the metrics of a closed server too.
func (s *Server) MetricsCollector() prometheus.Collector { return s.metrics }
