package federation

import "testing"

func TestParseXMatrix(t *testing.T) {
	t.Parallel()
	want := xMatrix{origin: "origin.example.com", destination: "dest.example.com", key: "ed25519:key1", sig: "ABC+/def"}
	tests := []struct {
		name      string
		header    string
		isXMatrix bool
		wantErr   bool
		want      xMatrix
	}{
		{name: "library form", header: `X-Matrix origin="origin.example.com",key="ed25519:key1",sig="ABC+/def",destination="dest.example.com"`, isXMatrix: true, want: want},
		{name: "spaces, case and tokens", header: `x-matrix  Origin=origin.example.com , DESTINATION="dest.example.com",	key=ed25519:key1,sig="ABC+/def"`, isXMatrix: true, want: want},
		{name: "escapes", header: `X-Matrix origin="origin\.example.com",destination="dest.example.com",key="ed25519:key1",sig="ABC+/def"`, isXMatrix: true, want: want},
		{name: "unknown parameters ignored", header: `X-Matrix foo="a,b",origin="origin.example.com",destination="dest.example.com",key="ed25519:key1",sig="ABC+/def"`, isXMatrix: true, want: want},
		{name: "no destination", header: `X-Matrix origin=o.org,key=ed25519:k,sig=s`, isXMatrix: true, want: xMatrix{origin: "o.org", key: "ed25519:k", sig: "s"}},
		{name: "other scheme", header: `Bearer abc`},
		{name: "missing sig", header: `X-Matrix origin=o.org,key=ed25519:k`, isXMatrix: true, wantErr: true},
		{name: "no parameters", header: `X-Matrix`, isXMatrix: true, wantErr: true},
		{name: "garbage", header: `X-Matrix garbage`, isXMatrix: true, wantErr: true},
		{name: "unterminated quote", header: `X-Matrix origin="o.org,key=ed25519:k,sig=s`, isXMatrix: true, wantErr: true},
		{name: "junk after quote", header: `X-Matrix origin="o.org"x,key=ed25519:k,sig=s`, isXMatrix: true, wantErr: true},
		{name: "quote inside value", header: `X-Matrix origin="o\"org",key=ed25519:k,sig=s`, isXMatrix: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, isXMatrix, err := parseXMatrix(tt.header)
			if isXMatrix != tt.isXMatrix || (err != nil) != tt.wantErr {
				t.Fatalf("isXMatrix %v err %v", isXMatrix, err)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
