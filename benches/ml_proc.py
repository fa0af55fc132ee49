"""What the ML benchmarks read from /proc: a process's CPU ticks, a
cluster's (the postmaster, its live and reaped children) and the
machine's, and the cargo builds running, shared by ml_explain.py,
ml_groups.py and ml_anywhere.py."""

import os


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def proc_ticks(pid):
    r = stat_fields(pid)
    return int(r[11]) + int(r[12])


def postmaster_pid(datadir):
    with open(os.path.join(datadir, "postmaster.pid")) as f:
        return int(f.readline())


def cluster_ticks(pm):
    """Postmaster (own and reaped children's) plus its live children."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            r = stat_fields(d)
        except OSError:
            continue
        if int(r[1]) == pm:
            total += int(r[11]) + int(r[12])
    r = stat_fields(pm)
    return total + int(r[11]) + int(r[12]) + int(r[13]) + int(r[14])


def system_ticks():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return sum(v), sum(v) - v[3] - v[4]  # total, busy


def builds_running():
    names = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in ("cargo", "rustc"):
            names.append(f"{comm}[{d}]")
    return names
