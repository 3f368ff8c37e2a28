"""The program a sandbox child runs before any untrusted line (the guards: grpo/rewards/sandbox.py).

Source text, not code of this process: the child is a fresh interpreter started with `-c RUNNER`.
"""

# Runs inside the child, as its first code: read the job, limit itself, install the audit hook,
# then run the program once per test in a fresh namespace. Must run on Python >= 3.8.
RUNNER = r"""
import ast, builtins, json, os, resource, sys

def _main():
    with open("job.json") as f:
        job = json.load(f)
    os.remove("job.json")
    fd, nonce = job["fd"], job["nonce"]
    for name, value in job["limits"].items():
        which = getattr(resource, name)
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)  # never above what we were given
        resource.setrlimit(which, (value, value))
    root = os.path.realpath(os.getcwd())
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {"os.remove", "os.rmdir", "os.chmod", "os.chown", "os.mkdir", "os.truncate", "os.utime",
                   "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "shutil.rmtree"}
    refused = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
               "pty.spawn", "os.startfile", "os.kill", "os.killpg", "signal.pthread_kill", "os.link", "os.symlink",
               "socket.__new__", "ctypes.dlopen", "ctypes.dlsym", "sys.addaudithook", "resource.setrlimit",
               "resource.prlimit"}
    if job["allow_processes"]:
        refused -= {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen"}

    def inside(path):
        if isinstance(path, int):
            return True  # an already-open descriptor: its opening was checked
        full = os.path.realpath(os.fsdecode(path))
        return full == root or full.startswith(root + os.sep)

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(flags, int) and flags & write_flags) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if path is not None and writing and not inside(path):
                raise PermissionError("sandbox: writing outside the working directory is not allowed")
        elif event in path_events:
            if args and args[0] is not None and not inside(args[0]):
                raise PermissionError("sandbox: %s outside the working directory is not allowed" % event)
        elif event == "os.rename":
            if not (inside(args[0]) and inside(args[1])):
                raise PermissionError("sandbox: renaming outside the working directory is not allowed")
        elif event in refused:
            raise PermissionError("sandbox: %s is not allowed" % event)

    program, tests = job["program"], job["tests"]
    del job
    sys.addaudithook(hook)

    def report(line):
        os.write(fd, ("%s %s\n" % (nonce, line)).encode())

    try:
        code = compile(program, "<solution>", "exec")
    except BaseException:
        report("compiled 0")
        report("done")
        return
    report("compiled 1")
    try:  # a bare expression is bound to `answer` (output-prediction items test `answer`)
        expr = compile(ast.parse(program, mode="eval"), "<solution>", "eval")
    except BaseException:
        expr = None
    for i, test in enumerate(tests):
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        ran = ok = 0
        try:
            exec(code, namespace)
            if expr is not None and "answer" not in namespace:
                namespace["answer"] = eval(expr, namespace)
            ran = 1
            exec(compile(test, "<test %d>" % i, "exec"), namespace)
            ok = 1
        except BaseException:
            pass
        report("test %d %d %d" % (i, ran, ok))
    report("done")

_main()
sys.stdout.flush()
os._exit(0)
"""
