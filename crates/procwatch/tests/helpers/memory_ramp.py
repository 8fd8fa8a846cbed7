"""Test helper for alarm_e2e: a process named NAME whose memory grows 4 MiB every 100 ms up
to 640 MiB, for at most 60 s. Usage: python3 memory_ramp.py NAME

It sets its own comm (what procwatch groups processes by) with prctl(PR_SET_NAME), so the
collector sees NAME, not python3. The sleep paces the ramp; nothing waits on it."""
import ctypes
import sys
import time

PR_SET_NAME = 15
STEP = 4 << 20
MAX = 640 << 20

name = sys.argv[1].encode()[:15]
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_NAME) failed")
held = []
end = time.monotonic() + 60
while time.monotonic() < end:
    if len(held) * STEP < MAX:
        held.append(b"\x01" * STEP)  # written, so resident
    time.sleep(0.1)  # behaviour: the ramp grows 1 step every 100 ms
