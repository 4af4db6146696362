"""Kernel-enforced confinement a harness process puts on itself before any submitted code runs.

Standard library only (ctypes): landlock through its three system calls and a seccomp BPF filter
assembled here. Both stay in force for the rest of the process's life and pass to every thread and
child it starts; nothing the candidate does inside its interpreter can lift them.

- landlock (file system): read and write only the process's own work directory; read the runtime's
  read-only paths (system directories, the Python prefixes and sys.path, CUDA, the harness
  package, a few files of /proc and its own /proc/<pid>); execute only what Triton's compiler runs
  (ptxas and its friends, gcc and its helpers, the dynamic loader), never anything under a writable
  directory. Everything else - other jobs' directories, the reference's, the worker's and the
  zygote's files, other processes' /proc entries - fails with EACCES.
- landlock scopes (ABI 6): no signal to a process outside this domain (the zygote, the reference,
  the worker, the launcher), no connection to an abstract Unix socket made outside it. Landlock
  also refuses ptrace (and the /proc files ptrace guards) of any process outside the domain.
- landlock network (ABI 4): no TCP bind or connect.
- seccomp: no new socket (socket(2); fds passed in over SCM_RIGHTS keep working, as do
  socketpair, memfd and mmap), no ptrace, process_vm_readv/writev, kcmp, pidfd_getfd, io_uring,
  bpf, userfaultfd, keyrings, new namespaces (unshare, setns, clone with CLONE_NEW*), mounts,
  chroot, kernel modules or kexec. clone3 answers ENOSYS, so the C library falls back to clone,
  whose flags the filter can read.

`probe()` says what this kernel supports; `apply()` applies all of it or raises (fail closed).
Landlock restricts only the calling thread and the threads it starts later, so `apply` must run
while the process has one thread (the zygote's spares call it right after fork).
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import struct
import sys
from dataclasses import dataclass, field

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every architecture
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK, FS_MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
FS_REFER, FS_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
# Rights that apply to a file (a rule on a file may name only these).
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE
READ = FS_READ_FILE | FS_READ_DIR
READ_EXECUTE = READ | FS_EXECUTE
READ_WRITE = (
    READ | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG | FS_MAKE_SYM | FS_REFER | FS_TRUNCATE
)
DEVICE = FS_READ_FILE | FS_WRITE_FILE
# /dev/shm on a GPU: torch's CUDA IPC keeps a reference count in a file there, named at random by
# the process that shares (shm_open); the one that opens a handle opens, and may be the last to
# unlink, that file. No READ_DIR: the names of other processes' files cannot be listed.
SHARED_MEMORY = FS_READ_FILE | FS_WRITE_FILE | FS_MAKE_REG | FS_REMOVE_FILE | FS_TRUNCATE

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
O_PATH, O_CLOEXEC = 0o10000000, 0o2000000

# seccomp
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
EPERM, ENOSYS = 1, 38
AF_UNIX = 1
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
# Any of these in clone's flags makes a new namespace.
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_BLOCKED = (
    "socket",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "syslog",
)
SYSCALLS = {
    "x86_64": {
        "socket": 41,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "kcmp": 312,
        "pidfd_getfd": 438,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "bpf": 321,
        "userfaultfd": 323,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "mount_setattr": 442,
        "open_by_handle_at": 304,
        "name_to_handle_at": 303,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "syslog": 103,
        "clone": 56,
        "clone3": 435,
    },
    "aarch64": {
        "socket": 198,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "kcmp": 272,
        "pidfd_getfd": 438,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "bpf": 280,
        "userfaultfd": 282,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "chroot": 51,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "mount_setattr": 442,
        "open_by_handle_at": 265,
        "name_to_handle_at": 264,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "syslog": 116,
        "clone": 220,
        "clone3": 435,
    },
}

# What the runtime reads of the system (absent paths are skipped).
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/sys", "/opt/nvidia")
PROC_READ = (
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/version",
    "/proc/devices",
    "/proc/modules",
    "/proc/filesystems",
    "/proc/sys",
    "/proc/driver/nvidia",
)
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# What Triton's compiler runs: gcc (and what it runs) for launchers and driver utilities, the
# assembler and linker, ldconfig for libcuda's directory; ptxas and friends come from Triton's
# backends or CUDA_HOME (see `executables`).
COMPILERS = ("gcc", "cc", "c99", "as", "ld", "ld.bfd", "ld.gold", "ldconfig")
COMPILER_DIRS = ("/usr/lib/gcc", "/usr/libexec/gcc", "/usr/lib64/gcc")
LOADERS = ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux.so.2")


class LockdownError(OSError):
    """A layer this kernel offers could not be applied; the process must not run submitted code."""


@dataclass(frozen=True)
class Support:
    landlock_abi: int = 0
    seccomp: bool = False

    def layers(self) -> list[str]:
        """Names for the result document (`environment.confinement`)."""
        names = []
        if self.landlock_abi:
            names.append(f"landlock:{self.landlock_abi}")
            if self.landlock_abi >= 4:
                names.append("landlock-net")
            if self.landlock_abi >= 6:
                names.append("landlock-scope:signal,abstract-unix")
        if self.seccomp:
            names.append("seccomp")
        return names


def landlock_abi() -> int:
    abi = _libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
    )
    return max(0, int(abi))


def probe(choice: str = "on") -> Support:
    """What this kernel lets us apply; `choice` "landlock" or "seccomp" keeps only that layer."""
    machine = os.uname().machine
    seccomp = machine in SYSCALLS and os.path.exists("/proc/self/status")
    if seccomp:
        with open("/proc/self/status") as handle:
            seccomp = any(line.startswith("Seccomp:") for line in handle)  # the kernel has CONFIG_SECCOMP
    return Support(landlock_abi() if choice != "seccomp" else 0, seccomp and choice != "landlock")


@dataclass
class Policy:
    """Paths and the landlock rights each gets; everything else is denied."""

    read: list[str] = field(default_factory=list)
    read_write: list[str | int] = field(default_factory=list)  # a path, or a descriptor of the directory
    execute: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    shared_memory: list[str] = field(default_factory=list)
    unix_sockets: bool = False  # socket(AF_UNIX) allowed: the CUDA driver needs it (every other family stays refused)
    # read, execute and devices resolved (`resolve`): the zygote does it once, its spares reuse it
    rules: dict[str, tuple[int, bool]] | None = None


def runtime_read_paths() -> list[str]:
    """The interpreter's prefixes and import paths, the harness package, CUDA and the runtime's
    environment paths: the read-only part of what this process needs."""
    paths = [
        os.path.dirname(os.path.realpath(sys.executable)),
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        *sys.path,
        os.path.dirname(os.path.abspath(__file__)),
    ]
    for name in ("CUDA_HOME", "CUDA_PATH", "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH", "LD_LIBRARY_PATH"):
        paths += [entry for entry in os.environ.get(name, "").split(":") if entry]
    if os.path.isdir("/usr/local/cuda"):
        paths.append("/usr/local/cuda")
    return paths


def executables() -> list[str]:
    """Files and directories whose files may be executed (read-only runtime paths only)."""
    found: list[str] = []
    for name in COMPILERS:
        for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                found.append(path)
        which = shutil.which(name)
        if which:
            found.append(which)
    # gcc runs `as` and `ld` through their target-prefixed names.
    found += glob.glob("/usr/bin/*-linux-gnu-as") + glob.glob("/usr/bin/*-linux-gnu-ld*") + glob.glob("/usr/bin/*-linux-gnu-gcc*")
    found += [d for d in COMPILER_DIRS if os.path.isdir(d)] + [p for p in LOADERS if os.path.exists(p)]
    for entry in sys.path:  # ptxas, cuobjdump, nvdisasm shipped with Triton
        found += glob.glob(os.path.join(entry, "triton", "backends", "*", "bin"))
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(name):
            found.append(os.path.join(os.environ[name], "bin"))
    found.append("/usr/local/cuda/bin")
    if os.environ.get("TRITON_PTXAS_PATH"):
        found.append(os.environ["TRITON_PTXAS_PATH"])
    return found


def default_policy(workdir: str | int, extra_read: list[str] | None = None, *, cuda: bool = False) -> Policy:
    """`workdir` (a path, or a descriptor that stays right however the directory is renamed) is the
    one place to write, and /dev/shm's files (not its listing) on a GPU."""
    return Policy(
        read=[*SYSTEM_READ, *runtime_read_paths(), *PROC_READ, *(extra_read or [])],
        read_write=[workdir],
        execute=executables(),
        devices=[*DEVICES, *glob.glob("/dev/nvidia*"), "/dev/nvidia-caps", "/dev/dri"],
        shared_memory=["/dev/shm"] if cuda else [],
        unix_sockets=cuda,
    )


def resolve(policy: Policy) -> dict[str, tuple[int, bool]]:
    """Real path -> (rights, is a directory) for every existing path of `policy` but its writable
    ones. The most generous right a path gets wins (landlock adds rights up a hierarchy anyway)."""
    wanted: dict[str, tuple[int, bool]] = {}
    for paths, rights in (
        (policy.read, READ),
        (policy.execute, READ_EXECUTE),
        (policy.devices, DEVICE),
        (policy.shared_memory, SHARED_MEMORY),
    ):
        for path in paths:
            if path and os.path.exists(path):
                real = os.path.realpath(path)
                wanted[real] = (wanted.get(real, (0, False))[0] | rights, os.path.isdir(real))
    return wanted


def _handled_fs(abi: int) -> int:
    handled = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        handled |= FS_REFER
    if abi >= 3:
        handled |= FS_TRUNCATE
    return handled  # IOCTL_DEV (ABI 5) is left alone: CUDA talks to its devices through ioctl


def _error(what: str) -> LockdownError:
    errno = ctypes.get_errno()
    return LockdownError(errno, f"{what}: {os.strerror(errno)}")


def apply_landlock(policy: Policy, abi: int) -> None:
    handled_fs = _handled_fs(abi)
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", handled_fs, handled_net, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    buffer = ctypes.create_string_buffer(attr[:size], size)
    ruleset = _libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), buffer, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise _error("landlock_create_ruleset")
    try:
        wanted = dict(policy.rules if policy.rules is not None else resolve(policy))
        # /proc/<pid>: this process's own entries, nobody else's; writable, because the CUDA driver
        # writes there while it initialises (with read only, cuInit fails: H200, driver 580).
        own_proc = os.path.realpath("/proc/self")
        wanted[own_proc] = (READ | FS_WRITE_FILE | FS_TRUNCATE, True)
        for path, (rights, is_dir) in wanted.items():
            try:
                fd = os.open(path, O_PATH | O_CLOEXEC)
            except OSError:
                continue  # vanished since; nothing to grant
            try:
                _add_rule(ruleset, fd, rights & handled_fs if is_dir else rights & handled_fs & _FILE_RIGHTS, path)
            finally:
                os.close(fd)
        for place in policy.read_write:  # never skipped: without it the process could not work
            fd = place if isinstance(place, int) else os.open(place, O_PATH | O_CLOEXEC | os.O_DIRECTORY)
            try:
                _add_rule(ruleset, fd, READ_WRITE & handled_fs, str(place))
            finally:
                if not isinstance(place, int):
                    os.close(fd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _error("no_new_privs")
        if _libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise _error("landlock_restrict_self")
    finally:
        os.close(ruleset)


def _add_rule(ruleset: int, fd: int, allowed: int, what: str) -> None:
    rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
    if (
        _libc.syscall(
            ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
            ctypes.c_int(ruleset),
            ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
            rule,
            ctypes.c_uint32(0),
        )
        != 0
    ):
        raise _error(f"landlock_add_rule {what}")


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_program(machine: str, unix_sockets: bool = False) -> bytes:
    """The filter: deny the calls in _BLOCKED with EPERM, clone3 with ENOSYS, clone with a
    namespace flag with EPERM; anything from another architecture's ABI is killed."""
    numbers = SYSCALLS[machine]
    deny = SECCOMP_RET_ERRNO | EPERM
    blocked = sorted({numbers[name] for name in _BLOCKED})
    program = [
        _bpf(BPF_LD_W_ABS, 4),
        _bpf(BPF_JEQ_K, AUDIT_ARCH[machine], 1, 0),
        _bpf(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        _bpf(BPF_LD_W_ABS, 0),
    ]
    if machine == "x86_64":  # the x32 ABI's numbers carry bit 30
        program += [_bpf(BPF_JGE_K, 0x40000000, 0, 1), _bpf(BPF_RET_K, deny)]
    if unix_sockets:  # socket(): Unix sockets only (the CUDA driver opens one while it initialises;
        # cuInit fails without it). Their peers are what the namespaces and landlock's scope leave reachable.
        program += [
            _bpf(BPF_JEQ_K, numbers["socket"], 0, 3),
            _bpf(BPF_LD_W_ABS, 16),  # the address family: the low half of args[0]
            _bpf(BPF_JEQ_K, AF_UNIX, 0, 1),
            _bpf(BPF_RET_K, SECCOMP_RET_ALLOW),
            _bpf(BPF_LD_W_ABS, 0),  # the syscall number again
        ]
    for number in blocked:
        program += [_bpf(BPF_JEQ_K, number, 0, 1), _bpf(BPF_RET_K, deny)]
    program += [
        _bpf(BPF_JEQ_K, numbers["clone3"], 0, 1),
        _bpf(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS),
        _bpf(BPF_JEQ_K, numbers["clone"], 0, 3),
        _bpf(BPF_LD_W_ABS, 16),  # clone's flags: the low half of args[0] (little-endian)
        _bpf(BPF_JSET_K, CLONE_NAMESPACES, 0, 1),
        _bpf(BPF_RET_K, deny),
        _bpf(BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp(unix_sockets: bool = False) -> None:
    machine = os.uname().machine
    if machine not in SYSCALLS:
        raise LockdownError(0, f"no seccomp filter for {machine}")
    program = seccomp_program(machine, unix_sockets)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _error("no_new_privs")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise _error("seccomp filter")


def apply(policy: Policy, support: Support) -> list[str]:
    """Apply every layer `support` names (raises LockdownError if one fails); returns their names.
    Landlock first: its rules are opened by path, which the filter does not affect either way."""
    if support.landlock_abi:
        apply_landlock(policy, support.landlock_abi)
    if support.seccomp:
        apply_seccomp(policy.unix_sockets)
    return support.layers()
