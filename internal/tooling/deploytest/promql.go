package deploytest

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Selector is one vector selector of a PromQL expression: the series it
// names and the label names its matchers name.
type Selector struct {
	Metric string
	Labels []string
}

// PromQLSelectors checks the shape of a PromQL expression and returns its
// vector selectors, in order. It is not Prometheus's parser (evsnap does
// not depend on Prometheus) but it rejects what a slip of the keyboard
// makes: a character PromQL has no use for, an unterminated string,
// unbalanced brackets, a function PromQL does not have, two operands
// with no operator between them or an operator without its operands, a
// malformed matcher, range or duration. Each error names the offset.
// (A metric name starting with a colon, which PromQL allows, is not
// recognised.)
func PromQLSelectors(expr string) ([]Selector, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return nil, err
	}
	p := &promParser{toks: toks}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p.sels, nil
}

type token struct {
	kind byte // 'i' identifier, 'n' number or duration, 's' string, else the operator's first byte
	text string
	pos  int
}

var (
	// numberRE is a float, hex or duration literal (5m, 1h30m, 1.5e3).
	numberRE   = regexp.MustCompile(`^(0[xX][0-9a-fA-F]+|([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+)?|([0-9]+(ms|s|m|h|d|w|y))+)$`)
	durationRE = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
)

func lexPromQL(s string) ([]token, error) {
	var toks []token
	isIdent := func(c byte, first bool) bool {
		return c == '_' || !first && c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	for i := 0; i < len(s); {
		c, j := s[i], i+1
		switch {
		case strings.IndexByte(" \t\r\n", c) >= 0:
			i++
			continue
		case c == '#':
			for j < len(s) && s[j] != '\n' {
				j++
			}
			i = j
			continue
		case c == '"' || c == '\'' || c == '`':
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("offset %d: unterminated string", i)
			}
			j++
			c = 's'
		case c >= '0' && c <= '9' || c == '.':
			for j < len(s) && s[j] != ':' && (isIdent(s[j], false) || s[j] == '.') {
				j++
			}
			if !numberRE.MatchString(s[i:j]) {
				return nil, fmt.Errorf("offset %d: %q is neither a number nor a duration", i, s[i:j])
			}
			c = 'n'
		case isIdent(c, true):
			for j < len(s) && isIdent(s[j], false) {
				j++
			}
			c = 'i'
		case strings.Contains("=!<>", string(c)) && j < len(s) && (s[j] == '=' || s[j] == '~' && c != '<' && c != '>'):
			j++
		case strings.IndexByte("+-*/%^<>=,(){}[]@:", c) < 0:
			return nil, fmt.Errorf("offset %d: unexpected %q", i, c)
		}
		toks = append(toks, token{kind: c, text: s[i:j], pos: i})
		i = j
	}
	return toks, nil
}

var (
	promFunctions = strings.Fields(`abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
		clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta
		deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev
		histogram_stdvar histogram_sum holt_winters hour idelta increase irate label_join label_replace last_over_time ln
		log10 log2 mad_over_time max_over_time min_over_time minute month pi predict_linear present_over_time
		quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc
		sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year`)
	promAggregators = strings.Fields(`sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio`)
	promBinaryOps   = strings.Fields(`+ - * / % ^ == != <= >= < > and or unless atan2`)
	promMatchOps    = []string{"=", "!=", "=~", "!~"}
)

type promParser struct {
	toks    []token
	i       int
	sels    []Selector
	operand bool // the last token ended an operand
}

func (p *promParser) peek() token {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return token{pos: -1}
}

func (p *promParser) next() token { t := p.peek(); p.i++; return t }

func (p *promParser) errorf(t token, format string, args ...any) error {
	at := "end"
	if t.pos >= 0 {
		at = fmt.Sprintf("offset %d (%q)", t.pos, t.text)
	}
	return fmt.Errorf("%s: %s", at, fmt.Sprintf(format, args...))
}

func (p *promParser) check() error {
	var open []byte // '(' still open
	for p.i < len(p.toks) {
		t := p.next()
		word := strings.ToLower(t.text)
		switch {
		case t.kind == 'i' && (word == "by" || word == "without" || word == "on" || word == "ignoring" || word == "group_left" || word == "group_right"):
			if p.peek().text == "(" {
				p.next()
				if _, err := p.list(')', nil); err != nil {
					return err
				}
			} else if word != "group_left" && word != "group_right" {
				return p.errorf(t, "%s needs a label list", word)
			}
		case t.kind == 'i' && word == "bool":
			// after a comparison: nothing changes
		case t.kind == 'i' && word == "offset":
			if !p.operand {
				return p.errorf(t, "offset without a selector")
			}
			if p.peek().text == "-" {
				p.next()
			}
			if d := p.next(); !durationRE.MatchString(d.text) {
				return p.errorf(d, "offset needs a duration")
			}
		case t.kind == 'i' && slices.Contains(promBinaryOps, word), t.kind != 'i' && slices.Contains(promBinaryOps, t.text):
			if !p.operand && t.text != "-" && t.text != "+" {
				return p.errorf(t, "operator without a left operand")
			}
			p.operand = false
		case p.operand && t.text != ")" && t.text != "," && t.text != "[" && t.text != "@":
			return p.errorf(t, "operator expected")
		case t.kind == 'i' && (slices.Contains(promAggregators, word) || p.peek().text == "("):
			if !slices.Contains(promAggregators, word) && !slices.Contains(promFunctions, t.text) {
				return p.errorf(t, "PromQL has no function %s", t.text)
			}
			if n := p.peek().text; n != "(" && n != "by" && n != "without" {
				return p.errorf(t, "%s needs its arguments", t.text)
			}
		case t.kind == 'i' && (word == "inf" || word == "nan"), t.kind == 'n', t.kind == 's':
			p.operand = true
		case t.kind == 'i' || t.text == "{":
			s := Selector{Metric: t.text}
			if t.text == "{" {
				s.Metric = ""
				p.i--
			}
			if p.peek().text == "{" {
				p.next()
				name, err := p.list('}', &s)
				if err != nil {
					return err
				}
				if name != "" {
					s.Metric = name
				}
			}
			if s.Metric == "" {
				return p.errorf(t, "a selector without a metric name")
			}
			p.sels = append(p.sels, s)
			p.operand = true
		case t.text == "(":
			open = append(open, '(')
		case t.text == ")":
			if len(open) == 0 {
				return p.errorf(t, "unbalanced )")
			}
			if !p.operand && p.toks[p.i-2].text != "(" {
				return p.errorf(t, "operand expected before )")
			}
			open = open[:len(open)-1]
			p.operand = true
		case t.text == ",":
			if !p.operand || len(open) == 0 {
				return p.errorf(t, "misplaced comma")
			}
			p.operand = false
		case t.text == "[":
			if err := p.rangeOrSubquery(t); err != nil {
				return err
			}
		case t.text == "@":
			if a := p.next(); a.kind != 'n' && a.text != "start" && a.text != "end" {
				return p.errorf(a, "@ needs a timestamp, start() or end()")
			} else if a.kind == 'i' && (p.next().text != "(" || p.next().text != ")") {
				return p.errorf(a, "%s()", a.text)
			}
		default:
			return p.errorf(t, "unexpected")
		}
	}
	if len(open) > 0 {
		return p.errorf(token{pos: -1}, "unbalanced (")
	}
	if !p.operand {
		return p.errorf(token{pos: -1}, "operand expected")
	}
	return nil
}

// list reads what follows an opening bracket up to close: label names
// separated by commas for ')', matchers (label op "value") for '}', which
// it adds to sel. It returns the value of a __name__="..." matcher.
func (p *promParser) list(close byte, sel *Selector) (name string, err error) {
	for {
		t := p.next()
		if t.text == string(close) {
			return name, nil
		}
		if t.kind != 'i' && t.kind != 's' {
			return "", p.errorf(t, "label name expected")
		}
		if sel != nil {
			op, v := p.next(), p.next()
			if !slices.Contains(promMatchOps, op.text) || v.kind != 's' {
				return "", p.errorf(op, `matcher expected: label="value"`)
			}
			if t.text == "__name__" && op.text == "=" {
				name = strings.Trim(v.text, "\"'`")
			} else {
				sel.Labels = append(sel.Labels, t.text)
			}
		}
		if sep := p.next(); sep.text == string(close) {
			return name, nil
		} else if sep.text != "," {
			return "", p.errorf(sep, "%q or , expected", string(close))
		}
	}
}

// rangeOrSubquery reads [5m] or [30m:1m] (the step optional).
func (p *promParser) rangeOrSubquery(open token) error {
	if !p.operand {
		return p.errorf(open, "a range needs a selector or subquery before it")
	}
	if d := p.next(); !durationRE.MatchString(d.text) {
		return p.errorf(d, "a range needs a duration")
	}
	t := p.next()
	if t.text == ":" {
		if t = p.next(); durationRE.MatchString(t.text) {
			t = p.next()
		}
	}
	if t.text != "]" {
		return p.errorf(t, "] expected")
	}
	return nil
}
