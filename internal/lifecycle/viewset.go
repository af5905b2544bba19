package lifecycle

import (
	"fmt"
	"sync"

	"go.opencensus.io/stats/view"
)

// ViewSet is a group of OpenCensus views registered at most once per process: OpenCensus
// refuses a second registration of views built anew, and several daemons may share a
// process (tests, benchmarks, the demo).
type ViewSet struct {
	name  string
	views []*view.View

	once sync.Once
	err  error
}

// NewViewSet names a group of views for error messages ("CDS API call views").
func NewViewSet(name string, views ...*view.View) *ViewSet {
	return &ViewSet{name: name, views: views}
}

// Register registers the views; later calls return the first result.
func (s *ViewSet) Register() error {
	s.once.Do(func() {
		if err := view.Register(s.views...); err != nil {
			s.err = fmt.Errorf("register %s: %w", s.name, err)
		}
	})
	return s.err
}

// Views returns the views of the set.
func (s *ViewSet) Views() []*view.View { return append([]*view.View(nil), s.views...) }
