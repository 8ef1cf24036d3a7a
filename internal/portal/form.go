package portal

import (
	"net/url"
	"slices"
	"strings"
)

// form is a form as the user filled it in, with what is wrong with it,
// so that a page shows the errors next to the fields and keeps what
// the user typed.
type form struct {
	// Values are the fields as typed; never nil.
	Values url.Values

	// Errors say what is wrong with a field, by field name.
	Errors map[string]string

	// Error says what is wrong with the form as a whole.
	Error string
}

// newForm returns a form holding values, which may be nil.
func newForm(values url.Values) *form {
	if values == nil {
		values = url.Values{}
	}
	return &form{Values: values, Errors: map[string]string{}}
}

// Get returns the value of the field name.
func (f *form) Get(name string) string { return f.Values.Get(name) }

// Has reports whether the field name holds value, for check boxes,
// radio buttons and options.
func (f *form) Has(name, value string) bool {
	return slices.Contains(f.Values[name], value)
}

// Err returns what is wrong with the field name, or "".
func (f *form) Err(name string) string { return f.Errors[name] }

// fail records what is wrong with the field name, keeping the first.
func (f *form) fail(name, msg string) {
	if _, ok := f.Errors[name]; !ok {
		f.Errors[name] = msg
	}
}

// require records msg for the field name when it is empty.
func (f *form) require(name, msg string) {
	if strings.TrimSpace(f.Get(name)) == "" {
		f.fail(name, msg)
	}
}

// ok reports whether nothing is wrong with the form.
func (f *form) ok() bool { return len(f.Errors) == 0 && f.Error == "" }

// field is what the "field" template needs to draw a labelled input.
type field struct {
	Name, Label, Type, Value, Error, Hint string
	Placeholder, Autocomplete, InputMode  string
	List, Min, Max                        string
	Required                              bool
}

// Field returns the field name of f labelled label, as the "field"
// template draws it; opts are "required", "type=…", "hint=…",
// "placeholder=…", "autocomplete=…", "inputmode=…", "list=…", "min=…"
// and "max=…". A password field never shows what was typed.
func (f *form) Field(name, label string, opts ...string) field {
	fd := field{Name: name, Label: label, Type: "text", Value: f.Get(name), Error: f.Err(name)}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "required":
			fd.Required = true
		case "type":
			fd.Type = v
		case "hint":
			fd.Hint = v
		case "placeholder":
			fd.Placeholder = v
		case "autocomplete":
			fd.Autocomplete = v
		case "inputmode":
			fd.InputMode = v
		case "list":
			fd.List = v
		case "min":
			fd.Min = v
		case "max":
			fd.Max = v
		}
	}
	if fd.Type == "password" {
		fd.Value = ""
	}
	return fd
}
