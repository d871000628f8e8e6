package e2ee

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/testkeys"
	"github.com/veche/veche/storage"
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestCheckDeviceKeys(t *testing.T) {
	dev := testkeys.NewDevice("@alice:x", "DEV")
	good := dev.DeviceKeys()
	forged := dev.DeviceKeys()
	forged["algorithms"] = []string{"other"}
	withUnsigned := dev.DeviceKeys()
	withUnsigned["unsigned"] = map[string]any{"device_display_name": "client-set"}
	unsignedKeys := map[string]any{"user_id": "@alice:x", "device_id": "DEV", "algorithms": []string{}, "keys": map[string]string{}}
	tests := []struct {
		name     string
		keys     any
		user     string
		device   string
		wantCode string
	}{
		{"valid", good, "@alice:x", "DEV", ""},
		{"client's unsigned is dropped", withUnsigned, "@alice:x", "DEV", ""},
		{"without a self-signature", unsignedKeys, "@alice:x", "DEV", ""},
		{"another device", good, "@alice:x", "OTHER", "M_INVALID_PARAM"},
		{"another user", good, "@bob:x", "DEV", "M_INVALID_PARAM"},
		{"bad signature", forged, "@alice:x", "DEV", "M_INVALID_SIGNATURE"},
		{"no keys", map[string]any{"user_id": "@alice:x", "device_id": "DEV"}, "@alice:x", "DEV", "M_MISSING_PARAM"},
		{"not an object", []int{1}, "@alice:x", "DEV", "M_BAD_JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := checkDeviceKeys(mustJSON(tc.keys), tc.user, tc.device)
			var me *mxerr.Error
			switch {
			case tc.wantCode == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantCode != "" && (!errors.As(err, &me) || me.ErrCode != tc.wantCode):
				t.Fatalf("err = %v, want %s", err, tc.wantCode)
			case tc.wantCode == "":
				var o map[string]any
				_ = json.Unmarshal(out, &o)
				if o["unsigned"] != nil {
					t.Fatalf("stored unsigned: %s", out)
				}
			}
		})
	}
}

func TestParseCrossSigningKey(t *testing.T) {
	cs := testkeys.NewCrossSigning("@alice:x")
	master := cs.MasterKey()
	twoKeys := cs.MasterKey()
	twoKeys["keys"] = map[string]string{testkeys.KeyID(cs.Master): cs.Master.PubB64(), testkeys.KeyID(cs.SelfSigning): cs.SelfSigning.PubB64()}
	misnamed := cs.MasterKey()
	misnamed["keys"] = map[string]string{"ed25519:name": cs.Master.PubB64()}
	tests := []struct {
		name, user, usage string
		key               any
		wantCode          string
	}{
		{"valid", "@alice:x", "master", master, ""},
		{"wrong user", "@bob:x", "master", master, "M_INVALID_PARAM"},
		{"wrong usage", "@alice:x", "self_signing", master, "M_INVALID_PARAM"},
		{"two keys", "@alice:x", "master", twoKeys, "M_INVALID_PARAM"},
		{"misnamed key", "@alice:x", "master", misnamed, "M_INVALID_PARAM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := parseCrossSigningKey(mustJSON(tc.key), tc.user, tc.usage)
			var me *mxerr.Error
			if tc.wantCode == "" {
				if err != nil || k.pub != cs.Master.PubB64() || k.keyID != testkeys.KeyID(cs.Master) {
					t.Fatalf("parsed %+v, %v", k, err)
				}
				return
			}
			if !errors.As(err, &me) || me.ErrCode != tc.wantCode {
				t.Fatalf("err = %v, want %s", err, tc.wantCode)
			}
		})
	}
}

func TestSignaturesMergeWithoutBreakingTheKey(t *testing.T) {
	dev := testkeys.NewDevice("@alice:x", "DEV")
	keys := mustJSON(dev.DeviceKeys())
	merged := withSignatures(keys, []storage.KeySignature{{SignerUserID: "@alice:x", SignerKeyID: "ed25519:ss", Signature: "sig"}})
	name := "Phone"
	merged = withDisplayName(merged, &name)
	var got map[string]any
	if err := json.Unmarshal(merged, &got); err != nil {
		t.Fatal(err)
	}
	if err := testkeys.Verify(got, "@alice:x", dev.KeyID(), dev.Ed25519.Pub); err != nil {
		t.Fatalf("the device's signature no longer verifies: %v", err)
	}
	if got["signatures"].(map[string]any)["@alice:x"].(map[string]any)["ed25519:ss"] != "sig" {
		t.Fatalf("merged signatures: %s", merged)
	}
	if !sameSignedPart(keys, merged) {
		t.Fatal("signatures and unsigned count as a different key")
	}
	other := testkeys.NewDevice("@alice:x", "DEV")
	if sameSignedPart(keys, mustJSON(other.DeviceKeys())) {
		t.Fatal("different keys count as the same")
	}
}
