"""Processes and threads: multiprocessing pools (fork, spawn, forkserver), executors, threads, queues."""

import multiprocessing as mp
import queue
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


def square(x: int) -> int:
    return x * x


def main() -> None:
    with mp.Pool(2) as pool:
        print(sum(pool.map(square, range(100))))
    with ProcessPoolExecutor(2) as ex:
        print(sum(ex.map(square, range(50))))
    with ThreadPoolExecutor(4) as ex:
        print(sum(ex.map(square, range(50))))
    q: queue.Queue[int] = queue.Queue()
    done = threading.Event()

    def worker() -> None:
        while q.get() >= 0:
            q.task_done()
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    for i in range(100):
        q.put(i)
    q.put(-1)
    t.join()
    lock = threading.Lock()
    with lock:
        print("threads", done.is_set())
    # spawn and forkserver start fresh interpreters (the runtime's python): builtins cross by name.
    for method in ("spawn", "forkserver"):
        with mp.get_context(method).Pool(1) as pool:
            print(method, pool.apply(abs, (-7,)))
    parent, child = mp.Pipe()
    p = mp.Process(target=child.send, args=("hello",))
    p.start()
    print(parent.recv())
    p.join()
    v = mp.Value("i", 0)
    print(v.value)


main()
