"""A seccomp filter for the task sandbox's child: before its model is touched, no new files,
processes, sockets or debugging of other processes.

The child runs an organization's ONNX graph through ONNX Runtime's native code; a model that
exploits a bug in it would run as the user. Once numpy and ONNX Runtime are imported (imports
open files) and before the session is built from the model's bytes, the child installs this
filter with the system's libseccomp (through ctypes), so the kernel answers EPERM to: opening or
creating files, executing programs, forking (``clone`` without ``CLONE_THREAD``), sockets,
ptrace and cross-process memory access, signalling other processes, changing the file system,
namespaces, and the kernel interfaces that sidestep filters (io_uring, bpf, userfaultfd).
Everything else, threads included, stays allowed: the filter is a deny-list, because an
allow-list would have to follow every syscall ONNX Runtime and the C library make anywhere.
``clone3`` answers ENOSYS, so the C library falls back to ``clone``, whose flags a filter can
read.

Without libseccomp (or on a kernel without seccomp) nothing is installed and the child says so,
as it does for the network namespace. With CUDA the filter is left off: the driver opens
devices and loads libraries while running.
"""

from __future__ import annotations

import ctypes
import errno

_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7
_CLONE_THREAD = 0x00010000
_DENIED = (
    *("open", "openat", "openat2", "creat", "open_by_handle_at", "name_to_handle_at"),
    *("execve", "execveat", "fork", "vfork"),
    *("socket", "socketpair", "connect", "bind", "listen", "accept", "accept4"),
    *("ptrace", "process_vm_readv", "process_vm_writev", "kill", "pidfd_open"),
    *("unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir"),
    *("link", "linkat", "symlink", "symlinkat", "truncate", "mknod", "mknodat"),
    *("chmod", "fchmodat", "chown", "lchown", "fchownat"),
    *("mount", "umount2", "pivot_root", "chroot", "setns", "unshare"),
    *("bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "keyctl", "add_key"),
    "request_key",
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def install() -> str:
    """Install the filter in this process (irreversibly); return what was done, in words."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return "none (libseccomp not found)"
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(_ACT_ALLOW)
    if not context:
        return "none (seccomp_init failed)"
    try:
        deny = _errno_action(errno.EPERM)
        for name in _DENIED:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number >= 0 and lib.seccomp_rule_add_array(context, deny, number, 0, None) != 0:
                return f"none (could not add a rule for {name})"
        # a clone without CLONE_THREAD is a new process; with it, a thread
        fork_only = (_ArgCmp * 1)(_ArgCmp(0, _CMP_MASKED_EQ, _CLONE_THREAD, 0))
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        if lib.seccomp_rule_add_array(context, deny, clone, 1, fork_only) != 0:
            return "none (could not add the clone rule)"
        clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            lib.seccomp_rule_add_array(context, _errno_action(errno.ENOSYS), clone3, 0, None)
        if lib.seccomp_load(context) != 0:
            return "none (the kernel refused the seccomp filter)"
    finally:
        lib.seccomp_release(context)
    return "seccomp (no new files, processes or sockets)"
