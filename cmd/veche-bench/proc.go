package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procSample is what /proc tells about the server process at one moment.
type procSample struct {
	RSSKiB int64 // VmRSS: resident now
	HWMKiB int64 // VmHWM: peak resident since the process started
	// CPUSeconds is user+system time; the kernel reports it in USER_HZ
	// ticks, which is 100 on every Linux architecture.
	CPUSeconds float64
}

const userHZ = 100

func readProc(pid int) (procSample, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, err
	}
	s, err := parseStatus(string(status))
	if err != nil {
		return s, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.CPUSeconds, err = parseStatCPU(string(stat)); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return s, nil
}

// parseStatus reads VmRSS and VmHWM ("VmRSS:\t  123456 kB").
func parseStatus(text string) (procSample, error) {
	var s procSample
	found := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return s, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return s, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		if key == "VmRSS" {
			s.RSSKiB = n
		} else {
			s.HWMKiB = n
		}
		found++
	}
	if found != 2 {
		// Kernel threads and zombies have no memory lines.
		return s, fmt.Errorf("no VmRSS/VmHWM (not a user process, or it exited?)")
	}
	return s, nil
}

// parseStatCPU reads utime+stime from /proc/<pid>/stat. The command name
// in parentheses may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(text string) (float64, error) {
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	// After ')' come fields 3 (state) onwards; utime and stime are 14, 15.
	f := strings.Fields(text[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times")
	}
	return float64(utime+stime) / userHZ, nil
}

// resetPeak sets the process's VmHWM back to its current VmRSS (Linux
// 4.0+: "5" to clear_refs), so that the next VmHWM read is the peak
// since now. Only the process's owner or root may do it.
func resetPeak(pid int) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/clear_refs", pid), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("5")
	return errors.Join(err, f.Close())
}
