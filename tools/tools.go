//go:build tools

// Package tools pins the modules the project depends on before every package imports them,
// and the code generators run by `make generate`.
package tools

import (
	_ "contrib.go.opencensus.io/exporter/prometheus"
	_ "github.com/BurntSushi/toml"
	_ "github.com/chromedp/chromedp"
	_ "github.com/coder/websocket"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/rockbears/log"
	_ "github.com/vmware/govmomi"
	_ "github.com/vmware/govmomi/simulator"
	_ "go.opencensus.io/stats/view"
	_ "go.uber.org/mock/gomock"
	_ "go.uber.org/mock/mockgen"
	_ "golang.org/x/sync/errgroup"
)
