package wsman

// Limits bound what Parse accepts. A zero or negative field takes its
// default (see DefaultLimits).
type Limits struct {
	MaxBytes    int // whole envelope, as received and after transcoding; default 512000
	MaxDepth    int // element nesting, the Envelope being depth 1; default 32
	MaxElements int // total elements; default 10000
	MaxAttrs    int // attributes per element, namespace declarations included; default 64
	MaxNameLen  int // element and attribute names, prefix included; default 256
}

// Default limit values. 512000 bytes is Windows' MaxEnvelopeSizekb of 500.
const (
	DefaultMaxBytes    = 512000
	DefaultMaxDepth    = 32
	DefaultMaxElements = 10000
	DefaultMaxAttrs    = 64
	DefaultMaxNameLen  = 256
)

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		MaxBytes:    DefaultMaxBytes,
		MaxDepth:    DefaultMaxDepth,
		MaxElements: DefaultMaxElements,
		MaxAttrs:    DefaultMaxAttrs,
		MaxNameLen:  DefaultMaxNameLen,
	}
}

// normalized replaces unset fields with their defaults.
func (l Limits) normalized() Limits {
	d := DefaultLimits()
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxElements <= 0 {
		l.MaxElements = d.MaxElements
	}
	if l.MaxAttrs <= 0 {
		l.MaxAttrs = d.MaxAttrs
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = d.MaxNameLen
	}
	return l
}
