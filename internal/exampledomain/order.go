package exampledomain

import (
	"errors"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/gojsoncodec"
)

// Order event type names.
const (
	TypeOrderPlaced  = "OrderPlaced"
	TypeItemAdded    = "ItemAdded"
	TypeOrderPaid    = "OrderPaid"
	TypeOrderShipped = "OrderShipped"
)

// OrderMilestones are the Order events that make a snapshot due whatever
// the threshold says: payment and shipment.
var OrderMilestones = []string{TypeOrderPaid, TypeOrderShipped}

// OrderPlaced is the first event of every order.
type OrderPlaced struct {
	Customer string `json:"customer"`
}

// EventType implements eventsource.Event.
func (OrderPlaced) EventType() string { return TypeOrderPlaced }

// ItemAdded adds a line to the order.
type ItemAdded struct {
	SKU      string  `json:"sku"`
	Quantity int     `json:"quantity"`
	Price    float64 `json:"price"`
}

// EventType implements eventsource.Event.
func (ItemAdded) EventType() string { return TypeItemAdded }

// OrderPaid records payment of the order total.
type OrderPaid struct {
	Amount float64 `json:"amount"`
}

// EventType implements eventsource.Event.
func (OrderPaid) EventType() string { return TypeOrderPaid }

// OrderShipped records shipment.
type OrderShipped struct {
	Carrier string `json:"carrier"`
}

// EventType implements eventsource.Event.
func (OrderShipped) EventType() string { return TypeOrderShipped }

// Order statuses.
const (
	StatusNone    = ""
	StatusOpen    = "open"
	StatusPaid    = "paid"
	StatusShipped = "shipped"
)

// OrderState is an order's state, as snapshots store it.
type OrderState struct {
	Customer string         `json:"customer"`
	Status   string         `json:"status"`
	Items    map[string]int `json:"items"`
	Lines    int            `json:"lines"`
	Total    float64        `json:"total"`
	Carrier  string         `json:"carrier,omitempty"`
}

// Apply implements eventsource.State. It copies the items map before
// changing it, so states captured earlier never change.
func (s OrderState) Apply(e eventsource.Event) OrderState {
	switch e := e.(type) {
	case OrderPlaced:
		s = OrderState{Customer: e.Customer, Status: StatusOpen, Items: map[string]int{}}
	case ItemAdded:
		items := make(map[string]int, len(s.Items)+1)
		for k, v := range s.Items {
			items[k] = v
		}
		items[e.SKU] += e.Quantity
		s.Items = items
		s.Lines++
		s.Total += float64(e.Quantity) * e.Price
	case OrderPaid:
		s.Status = StatusPaid
	case OrderShipped:
		s.Status = StatusShipped
		s.Carrier = e.Carrier
	}
	return s
}

// OrderType is the Order aggregate's type name.
const OrderType = "Order"

// OrderSchemaVersion is the version of OrderState's encoded form.
const OrderSchemaVersion = 1

// Order is an order that is placed, filled, paid and shipped.
type Order struct {
	eventsource.Root[OrderState]
}

// AggregateType implements eventsource.Aggregate.
func (*Order) AggregateType() string { return OrderType }

// SchemaVersion implements eventsource.Aggregate.
func (*Order) SchemaVersion() int { return OrderSchemaVersion }

// Errors returned by order commands.
var ErrOrderState = errors.New("order is not in a state that allows this")

// Place places the order.
func (o *Order) Place(customer string) error {
	if o.State().Status != StatusNone {
		return fmt.Errorf("place: %w (status %q)", ErrOrderState, o.State().Status)
	}
	o.Raise(OrderPlaced{Customer: customer})
	return nil
}

// AddItem adds quantity of sku at price.
func (o *Order) AddItem(sku string, quantity int, price float64) error {
	if o.State().Status != StatusOpen {
		return fmt.Errorf("add item: %w (status %q)", ErrOrderState, o.State().Status)
	}
	if quantity <= 0 || price < 0 {
		return fmt.Errorf("add item %s: quantity %d, price %.2f: %w", sku, quantity, price, ErrInvalidAmount)
	}
	o.Raise(ItemAdded{SKU: sku, Quantity: quantity, Price: price})
	return nil
}

// Pay pays the order's total.
func (o *Order) Pay() error {
	if o.State().Status != StatusOpen || o.State().Lines == 0 {
		return fmt.Errorf("pay: %w (status %q, %d lines)", ErrOrderState, o.State().Status, o.State().Lines)
	}
	o.Raise(OrderPaid{Amount: o.State().Total})
	return nil
}

// Ship ships a paid order.
func (o *Order) Ship(carrier string) error {
	if o.State().Status != StatusPaid {
		return fmt.Errorf("ship: %w (status %q)", ErrOrderState, o.State().Status)
	}
	o.Raise(OrderShipped{Carrier: carrier})
	return nil
}

// NewRegistry returns a registry holding every event type of the example
// domain. It decodes with gojsoncodec (goccy/go-json, about 4× faster than
// encoding/json on these payloads) unless opts say otherwise.
func NewRegistry(opts ...eventsource.RegistryOption) *eventsource.Registry {
	r := eventsource.NewRegistry(append([]eventsource.RegistryOption{eventsource.WithCodec(gojsoncodec.Codec{})}, opts...)...)
	eventsource.MustRegister[AccountOpened](r)
	eventsource.MustRegister[MoneyDeposited](r)
	eventsource.MustRegister[MoneyWithdrawn](r)
	eventsource.MustRegister[OrderPlaced](r)
	eventsource.MustRegister[ItemAdded](r)
	eventsource.MustRegister[OrderPaid](r)
	eventsource.MustRegister[OrderShipped](r)
	return r
}
