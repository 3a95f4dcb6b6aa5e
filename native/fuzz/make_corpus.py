#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus: native/fuzz/corpus/{datagram,stat,taskstats}/.

Run as root (the proc connector needs CAP_NET_ADMIN): python3 native/fuzz/make_corpus.py

datagram/: real datagrams from the kernel's proc connector, captured while this script
forks, execs, renames, changes ids and exits children of its own; then variants of them:
the exec of each process in fuzz_datagram.c's stand-in /proc, several messages in one
datagram, sequences of datagrams (joined by "PCDG") with and without a sequence gap, acks,
and truncated and oversized ones.

stat/: real /proc/PID/stat lines (this process, a kernel thread, a zombie, a comm with
spaces and ')'), and cut ones.

taskstats/: real datagrams from the taskstats socket at a child's exit, a thread's, and a
thread group's end (with AGGR_TGID), their family id rewritten to fuzz_taskstats.c's; the
controller's answer and an ack; and cut ones.

The files are committed; run this again only to refresh them (the names stay, the bytes
change). Nothing here runs in CI.
"""

import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4

EV = {
    "none": 0,
    "fork": 0x1,
    "exec": 0x2,
    "uid": 0x4,
    "gid": 0x40,
    "sid": 0x80,
    "ptrace": 0x100,
    "comm": 0x200,
    "coredump": 0x40000000,
    "exit": 0x80000000,
}

HERE = os.path.dirname(os.path.abspath(__file__))
DGRAM_DIR = os.path.join(HERE, "corpus", "datagram")
STAT_DIR = os.path.join(HERE, "corpus", "stat")
TS_DIR = os.path.join(HERE, "corpus", "taskstats")
NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
FUZZ_FAMILY = 0x1C  # fuzz_taskstats.c's FAMILY
SEP = b"PCDG"
FAKE_PIDS = range(4001, 4008)  # fuzz_datagram.c's stand-in /proc


def nl_message(payload, seq=0, pid=0, mtype=NLMSG_DONE, flags=0):
    """One netlink message carrying `payload`, padded to 4 bytes."""
    length = 16 + len(payload)
    msg = struct.pack("=IHHII", length, mtype, flags, seq, pid) + payload
    return msg + b"\0" * (-len(msg) % 4)


def cn_message(data, seq=0, ack=0):
    return struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, seq, ack, len(data), 0) + data


def subscribe():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: a busy machine floods
    s.bind((0, CN_IDX_PROC))
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
    portid = s.getsockname()[0]
    s.sendto(nl_message(cn_message(op, seq=1, ack=1), seq=1, pid=portid), (0, 0))
    return s


def unsubscribe(s):
    op = struct.pack("=I", PROC_CN_MCAST_IGNORE)
    portid = s.getsockname()[0]
    s.sendto(nl_message(cn_message(op, seq=3, ack=3), seq=3, pid=portid), (0, 0))
    s.close()


def parse(dgram):
    """(what, cpu, seq, ack, event_data) of the first message of a datagram, or None."""
    if len(dgram) < 16 + 20 + 16:
        return None
    _, _, seq, ack, _, _ = struct.unpack_from("=IIIIHH", dgram, 16)
    what, cpu = struct.unpack_from("=II", dgram, 36)
    return what, cpu, seq, ack, dgram[52:]


def capture(actions, seconds=1.0):
    """Runs actions() while subscribed; returns every datagram the kernel sent."""
    s = subscribe()
    got = []
    try:
        actions()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r, _, _ = select.select([s], [], [], 0.05)
            if r:
                try:
                    data, addr = s.recvfrom(65536)
                except OSError:  # ENOBUFS: some other process's events were dropped
                    continue
                if addr[0] == 0:
                    got.append(data)
    finally:
        unsubscribe(s)
    return got


def child(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(3)
    return pid


def set_comm(name):
    with open("/proc/self/comm", "w") as f:
        f.write(name)


def actions(pids):
    def run():
        # fork + exec + exit 0
        pids["exec"] = child(lambda: os.execv("/bin/true", ["/bin/true", "pcfuzz-marker"]))
        os.waitpid(pids["exec"], 0)
        # exit with a status, a rename, id changes and a new session
        def ids():
            set_comm("we) ird (n) me")
            os.setsid()
            os.setgid(65534)
            os.setuid(65534)
            os._exit(7)

        pids["ids"] = child(ids)
        os.waitpid(pids["ids"], 0)
        # killed by a signal
        pids["killed"] = child(lambda: time.sleep(30))
        os.kill(pids["killed"], signal.SIGKILL)
        os.waitpid(pids["killed"], 0)

    return run


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def with_tgid(dgram, pid):
    """An exec datagram made to name `pid` (process_pid and process_tgid)."""
    b = bytearray(dgram)
    struct.pack_into("=ii", b, 52, pid, pid)
    return bytes(b)


def with_seq(dgram, seq):
    b = bytearray(dgram)
    struct.pack_into("=I", b, 24, seq)
    return bytes(b)


def datagrams():
    pids = {}
    got = capture(actions(pids))
    first = {}
    for d in got:
        p = parse(d)
        if p is None:
            continue
        what, _, _, _, data = p
        pid = struct.unpack_from("=i", data, 0)[0]
        tgid = struct.unpack_from("=i", data, 4)[0]
        fork_child = struct.unpack_from("=i", data, 12)[0] if what == EV["fork"] else None
        mine = fork_child in pids.values() or tgid in pids.values() or pid in pids.values()
        if what == EV["none"]:
            first.setdefault("ack", d)  # the kernel's ack of our LISTEN
        elif mine:
            name = next(k for k, v in EV.items() if v == what)
            if name == "exit":
                code = struct.unpack_from("=I", data, 8)[0]
                name = "exit-signal" if code & 0x7F else "exit-status"
            first.setdefault(name, d)
    need = ["fork", "exec", "exit-status", "exit-signal", "comm", "uid", "gid", "sid"]
    missing = [n for n in need if n not in first]
    if missing:
        sys.exit(f"make_corpus: no {', '.join(missing)} message was captured")

    for name, d in first.items():
        write(DGRAM_DIR, f"{name}.bin", d)
    exec_d = first["exec"]
    for pid in FAKE_PIDS:
        write(DGRAM_DIR, f"exec-{pid}.bin", with_tgid(exec_d, pid))
    # a coredump: the exit's layout with the kernel's coredump kind (rare to capture)
    core = bytearray(first["exit-signal"])
    struct.pack_into("=I", core, 36, EV["coredump"])
    write(DGRAM_DIR, "coredump.bin", bytes(core))
    # several messages in one datagram, as netlink may pack them
    write(DGRAM_DIR, "packed-fork-exec-exit.bin",
          first["fork"] + with_tgid(exec_d, 4001) + first["exit-status"])
    # a sequence on one CPU, in order, then with a gap of 5 (a LOST kernel record)
    seq = struct.unpack_from("=I", first["fork"], 24)[0]
    cpu = struct.unpack_from("=I", first["fork"], 40)[0]
    in_order = []
    for i, d in enumerate([first["fork"], with_tgid(exec_d, 4002), first["comm"],
                           first["exit-status"]]):
        b = bytearray(with_seq(d, seq + i))
        struct.pack_into("=I", b, 40, cpu)
        in_order.append(bytes(b))
    write(DGRAM_DIR, "seq-in-order.bin", SEP.join(in_order))
    gap = list(in_order)
    gap[2] = with_seq(gap[2], seq + 7)
    gap[3] = with_seq(gap[3], seq + 8)
    write(DGRAM_DIR, "seq-gap.bin", SEP.join(gap))
    # an overrun notice between events, and a no-op and an error message
    overrun = nl_message(b"", mtype=NLMSG_OVERRUN)
    write(DGRAM_DIR, "overrun.bin", SEP.join([first["fork"], overrun, first["exit-status"]]))
    write(DGRAM_DIR, "noop-error.bin",
          nl_message(b"", mtype=NLMSG_NOOP) + nl_message(b"\0" * 20, mtype=NLMSG_ERROR) +
          first["exec"])
    # truncated: cut inside the netlink header, the cn_msg, the event head, the union
    for cut in (8, 30, 44, 60, len(exec_d) - 4):
        write(DGRAM_DIR, f"truncated-{cut}.bin", exec_d[:cut])
    # a cn_msg.len shorter than the event head, and one claiming more than is there
    short = bytearray(exec_d)
    struct.pack_into("=H", short, 32, 12)
    write(DGRAM_DIR, "cnlen-short.bin", bytes(short))
    long_ = bytearray(exec_d)
    struct.pack_into("=H", long_, 32, 400)
    write(DGRAM_DIR, "cnlen-long.bin", bytes(long_))
    # nlmsg_len past the datagram's end, and a zero one
    over = bytearray(exec_d)
    struct.pack_into("=I", over, 0, 4096)
    write(DGRAM_DIR, "nlmsglen-over.bin", bytes(over))
    zero = bytearray(exec_d)
    struct.pack_into("=I", zero, 0, 0)
    write(DGRAM_DIR, "nlmsglen-zero.bin", bytes(zero))
    # a datagram longer than a receive slot (1024 bytes): the reader never sees it whole
    write(DGRAM_DIR, "oversized.bin", exec_d * (1100 // len(exec_d) + 1))
    # not the proc connector's id
    other = bytearray(exec_d)
    struct.pack_into("=I", other, 16, 7)
    write(DGRAM_DIR, "other-idx.bin", bytes(other))
    # a kind newer kernels may add: left out
    unknown = bytearray(exec_d)
    struct.pack_into("=I", unknown, 36, 0x00000800)
    write(DGRAM_DIR, "unknown-kind.bin", bytes(unknown))


def stats():
    def stat_of(pid):
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read()

    write(STAT_DIR, "self.txt", stat_of("self"))
    write(STAT_DIR, "init.txt", stat_of(1))
    write(STAT_DIR, "kthreadd.txt", stat_of(2))
    # a comm with spaces and ')', as a process can name itself
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        set_comm("a) b (c) d)")
        os.write(w, b"x")
        time.sleep(5)
        os._exit(0)
    os.read(r, 1)
    write(STAT_DIR, "comm-parens.txt", stat_of(pid))
    os.kill(pid, signal.SIGKILL)
    # a zombie: exited, not yet waited for
    time.sleep(0.1)
    zombie = stat_of(pid)
    os.waitpid(pid, 0)
    write(STAT_DIR, "zombie.txt", zombie)
    line = stat_of("self")
    write(STAT_DIR, "cut-before-ppid.txt", line[: line.index(b")") + 3])
    write(STAT_DIR, "cut-in-starttime.txt", line[:120])
    write(STAT_DIR, "no-close-paren.txt", line.replace(b")", b" "))


def taskstats():
    """Captures what the taskstats socket receives while children and threads exit."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    sock.bind((0, 0))

    def request(mtype, cmd, attr, value, flags=0, seq=1):
        nla = struct.pack("=HH", 4 + len(value), attr) + value
        nla += b"\0" * (-len(nla) % 4)
        sock.send(nl_message(struct.pack("=BBH", cmd, 1, 0) + nla, seq, 0, mtype, 1 | flags))
        return sock.recv(65536)

    reply = request(GENL_ID_CTRL, 3, 2, b"TASKSTATS\0")  # CTRL_CMD_GETFAMILY, FAMILY_NAME
    write(TS_DIR, "ctrl-reply.bin", reply)
    off, family = 20, None
    while off + 4 <= len(reply):
        length, attr = struct.unpack_from("=HH", reply, off)
        if attr == 1:  # CTRL_ATTR_FAMILY_ID
            family = struct.unpack_from("=H", reply, off + 4)[0]
        off += (length + 3) & ~3
    with open("/sys/devices/system/cpu/possible", "rb") as f:
        cpus = f.read().strip() + b"\0"
    ack = request(family, 1, 3, cpus, flags=4, seq=2)  # CMD_GET, REGISTER_CPUMASK, NLM_F_ACK
    write(TS_DIR, "ack.bin", ack)

    pid = os.fork()
    if pid == 0:
        os._exit(3)
    os.waitpid(pid, 0)
    threads = "import threading\nt=threading.Thread(target=lambda:0)\nt.start()\nt.join()"
    os.spawnlp(os.P_WAIT, "python3", "python3", "-c", threads)
    got = []
    while select.select([sock], [], [], 0.5)[0]:
        got.append(bytearray(sock.recv(65536)))
    sock.close()
    names = {}
    for d in got:
        struct.pack_into("=H", d, 4, FUZZ_FAMILY)
        types, off = [], 20
        while off + 4 <= len(d):
            length, attr = struct.unpack_from("=HH", d, off)
            types.append(attr & 0x3FFF)
            off += max(4, (length + 3) & ~3)
        name = "group-end.bin" if 5 in types else "exit.bin"  # TASKSTATS_TYPE_AGGR_TGID
        names.setdefault(name, bytes(d))
    for name, d in names.items():
        write(TS_DIR, name, d)
        write(TS_DIR, "cut-" + name, d[: len(d) // 2])


def main():
    if os.geteuid() != 0:
        sys.exit("make_corpus: run as root (the proc connector needs CAP_NET_ADMIN)")
    datagrams()
    stats()
    taskstats()
    print(f"make_corpus: wrote {len(os.listdir(DGRAM_DIR))} datagram and "
          f"{len(os.listdir(STAT_DIR))} stat seeds")


if __name__ == "__main__":
    main()
