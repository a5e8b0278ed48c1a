package backendapi

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	defaultLimit = 10
	maxListLimit = 100
)

// page applies ?limit= and ?after= (a slug) to slugs sorted ascending.
func page[T any](c *call, items []T, slug func(T) string) (wire.List[T], error) {
	limit := defaultLimit
	if raw := c.r.URL.Query().Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxListLimit {
			return wire.List[T]{}, errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "limit must be a whole number from 1 to %d", maxListLimit)
		}
		limit = n
	}
	slices.SortFunc(items, func(a, b T) int { return compare(slug(a), slug(b)) })
	start := 0
	if after := c.r.URL.Query().Get("after"); after != "" {
		start = len(items)
		for i, it := range items {
			if slug(it) > after {
				start = i
				break
			}
		}
	}
	list := wire.List[T]{Object: "list", Data: []T{}}
	end := min(start+limit, len(items))
	list.Data = append(list.Data, items[start:end]...)
	if start > 0 && start <= len(items) && len(list.Data) > 0 {
		before := slug(list.Data[0])
		list.ListMetadata.Before = &before
	}
	if end < len(items) {
		after := slug(items[end-1])
		list.ListMetadata.After = &after
	}
	return list, nil
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
