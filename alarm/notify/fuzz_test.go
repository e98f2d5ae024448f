package notify

import "testing"

// FuzzDecodeNotification checks that no outbox record makes the decoder
// panic, and that what it reads encodes back to a record it reads the same.
func FuzzDecodeNotification(f *testing.F) {
	raw, _ := (&Notification{ID: "k", Receiver: "r", Body: []byte(`{"a":1}`)}).encode()
	f.Add(raw)
	f.Add([]byte{0, 0, 0, 2, '{', '}', 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		nt, err := decodeNotification(data)
		if err != nil {
			return
		}
		again, err := nt.encode()
		if err != nil {
			return // e.g. a time the JSON encoder refuses
		}
		back, err := decodeNotification(again)
		if err != nil || string(back.Body) != string(nt.Body) || back.ID != nt.ID {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
	})
}
