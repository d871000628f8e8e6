package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/veche/veche/internal/testserver"
)

// BenchmarkWhoami measures an authenticated request end to end over
// loopback HTTP: routing, token hash lookup, JSON answer.
func BenchmarkWhoami(b *testing.B) {
	s := testserver.Start(b)
	tok := register(b, s, "bench")
	url := s.URL + "/_matrix/client/v3/account/whoami"
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
		for pb.Next() {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := client.Do(req)
			if err != nil || res.StatusCode != 200 {
				b.Fatalf("whoami: %v %v", res, err)
			}
			_, _ = io.Copy(io.Discard, res.Body) // drained, so the connection is reused
			res.Body.Close()
		}
	})
}

// BenchmarkPutAccountData measures a durable write: one transaction that
// takes a stream position and upserts a row.
func BenchmarkPutAccountData(b *testing.B) {
	s := testserver.Start(b)
	tok := register(b, s, "bench")
	url := s.URL + "/_matrix/client/v3/user/@bench:test.veche/account_data/org.example.bench"
	client := &http.Client{}
	b.ResetTimer()
	for b.Loop() {
		put(b, client, url, tok, `{"n":1}`)
	}
}

// BenchmarkSendMessage measures sequential sends into one room over HTTP:
// build, sign, authorize, persist, stream position, JSON answer.
func BenchmarkSendMessage(b *testing.B) {
	s := testserver.Start(b)
	tok := register(b, s, "bench")
	room := post(b, s.URL+"/_matrix/client/v3/createRoom", tok, map[string]any{})["room_id"].(string)
	client := &http.Client{}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		url := s.URL + "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/t" + strconv.Itoa(i)
		put(b, client, url, tok, `{"msgtype":"m.text","body":"hello"}`)
	}
}

// BenchmarkSendMessageParallel has 8 senders in one room, which the
// room's actor commits in groups.
func BenchmarkSendMessageParallel(b *testing.B) {
	s := testserver.Start(b)
	tok := register(b, s, "bench")
	room := post(b, s.URL+"/_matrix/client/v3/createRoom", tok, map[string]any{})["room_id"].(string)
	var n atomic.Int64
	b.SetParallelism(4) // 2 cores × 4 = 8 senders
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
		for pb.Next() {
			url := s.URL + "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/p" + strconv.FormatInt(n.Add(1), 10)
			put(b, client, url, tok, `{"msgtype":"m.text","body":"hello"}`)
		}
	})
}

// BenchmarkDelivery is a message from its send until a receiver's waiting
// long-poll returns it.
func BenchmarkDelivery(b *testing.B) {
	s := testserver.Start(b)
	sender := register(b, s, "sender")
	receiver := register(b, s, "receiver")
	room := post(b, s.URL+"/_matrix/client/v3/createRoom", sender, map[string]any{"preset": "public_chat"})["room_id"].(string)
	post(b, s.URL+"/_matrix/client/v3/rooms/"+room+"/join", receiver, map[string]any{})
	client := &http.Client{}
	syncOnce := func(since string) string {
		url := s.URL + "/_matrix/client/v3/sync?timeout=30000&since=" + since
		if since == "" {
			url = s.URL + "/_matrix/client/v3/sync"
		}
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+receiver)
		res, err := client.Do(req)
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("sync: %v %v", res, err)
		}
		defer res.Body.Close()
		var body struct {
			NextBatch string `json:"next_batch"`
		}
		_ = json.NewDecoder(res.Body).Decode(&body)
		return body.NextBatch
	}
	since := syncOnce("")
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		done := make(chan string, 1)
		go func(since string) { done <- syncOnce(since) }(since)
		url := s.URL + "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/d" + strconv.Itoa(i)
		req, _ := http.NewRequest("PUT", url, strings.NewReader(`{"msgtype":"m.text","body":"ping"}`))
		req.Header.Set("Authorization", "Bearer "+sender)
		res, err := client.Do(req)
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("send: %v %v", res, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		since = <-done
	}
}

// put sends an authenticated PUT and drains the answer, so that the
// connection is reused.
func put(b *testing.B, client *http.Client, url, tok, body string) {
	req, _ := http.NewRequest("PUT", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := client.Do(req)
	if err != nil || res.StatusCode != 200 {
		b.Fatalf("PUT %s: %v %v", url, res, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
}
