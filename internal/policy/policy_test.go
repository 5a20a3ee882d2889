package policy

import "testing"

func TestThreshold(t *testing.T) {
	p, err := NewThreshold(10)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		head, snap int64
		want       bool
	}{
		{"below", 9, 0, false},
		{"exactly", 10, 0, true},
		// The tutorial's demo: one save of 16 events with threshold 10.
		{"jump past", 16, 0, true},
		{"since snapshot below", 25, 16, false},
		{"since snapshot reached", 26, 16, true},
		{"snapshot ahead of head", 5, 9, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := p.Due(Input{HeadVersion: c.head, SnapshotVersion: c.snap}); got != c.want {
				t.Fatalf("Due(head=%d, snap=%d) = %v, want %v", c.head, c.snap, got, c.want)
			}
		})
	}
}

func TestThresholdRejectsNonPositive(t *testing.T) {
	for _, n := range []int64{0, -1} {
		if _, err := NewThreshold(n); err == nil {
			t.Fatalf("NewThreshold(%d) accepted", n)
		}
	}
}

func TestMilestones(t *testing.T) {
	m, err := NewMilestones("OrderShipped", "OrderPaid", "OrderPaid")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Types(); len(got) != 2 {
		t.Fatalf("types not deduplicated: %v", got)
	}
	if !m.Due(Input{HeadVersion: 3, Appended: []string{"ItemAdded", "OrderPaid"}}) {
		t.Fatal("milestone in appended types not due")
	}
	if m.Due(Input{HeadVersion: 3, Appended: []string{"ItemAdded"}}) {
		t.Fatal("due without a milestone")
	}
	if m.Due(Input{HeadVersion: 3, SnapshotVersion: 3, Appended: []string{"OrderPaid"}}) {
		t.Fatal("due although the snapshot is at the head")
	}
	if _, err := NewMilestones("OrderPaid", " "); err == nil {
		t.Fatal("empty milestone accepted")
	}
}

func TestAnyOf(t *testing.T) {
	th, _ := NewThreshold(100)
	ms, _ := NewMilestones("OrderShipped")
	p := AnyOf{th, ms}
	if !p.Due(Input{HeadVersion: 5, Appended: []string{"OrderShipped"}}) {
		t.Fatal("milestone arm not due")
	}
	if !p.Due(Input{HeadVersion: 100}) {
		t.Fatal("threshold arm not due")
	}
	if p.Due(Input{HeadVersion: 50, Appended: []string{"ItemAdded"}}) {
		t.Fatal("due with neither arm")
	}
	if (AnyOf{}).Due(Input{HeadVersion: 1000}) {
		t.Fatal("empty AnyOf due")
	}
	if (Never{}).Due(Input{HeadVersion: 1000, Appended: []string{"OrderShipped"}}) {
		t.Fatal("Never due")
	}
	if got := p.String(); got != "any(threshold(100),milestones(OrderShipped))" {
		t.Fatalf("String() = %q", got)
	}
}

// Every policy is monotone in the snapshot's age: not due at snapshot
// version v means not due at any later version (the worker decides
// notices below the threshold without reading the snapshot on it).
func TestPoliciesAreMonotone(t *testing.T) {
	th, _ := NewThreshold(10)
	ms, _ := NewMilestones("Shipped")
	policies := []Policy{th, ms, AnyOf{th, ms}, Never{}}
	for _, p := range policies {
		for head := int64(1); head <= 40; head++ {
			for _, appended := range [][]string{nil, {"Created"}, {"Shipped"}, {"Created", "Shipped"}} {
				for v := int64(0); v <= head+1; v++ {
					in := Input{AggregateType: "T", HeadVersion: head, SnapshotVersion: v, Appended: appended}
					if p.Due(in) {
						continue
					}
					for later := v + 1; later <= head+1; later++ {
						in.SnapshotVersion = later
						if p.Due(in) {
							t.Fatalf("%s: not due at head %d with a snapshot at v%d, due with one at v%d (appended %v)", p, head, v, later, appended)
						}
					}
				}
			}
		}
	}
}
