"""Screenshot of a served page with headless Chromium, after the page has finished its work.

``chromium --screenshot`` shoots as soon as the page has loaded, before the demo's first samples
arrive; this script drives the same headless Chromium through its DevTools pipe
(``--remote-debugging-pipe``, no extra Python package), waits until no progress indicator is
left on the page (or ``--timeout``), then saves a PNG::

    python projects/gradio_demo/app.py --port 7860 &
    python projects/gradio_demo/screenshot.py http://127.0.0.1:7860/ docs/screenshot.png
"""
import argparse
import base64
import json
import os
import subprocess
import time
from typing import Optional, Sequence

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--hide-scrollbars', '--remote-debugging-pipe']
#: true while Gradio still shows a pending/progress indicator
BUSY_JS = "!!document.querySelector('.progress-text, .eta-bar, .meta-text-center')"


class Pipe:
    """Chromium's DevTools protocol over fds 3/4 (JSON messages ended by NUL)."""

    def __init__(self, chromium: str, width: int, height: int) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: fd 3 reads our commands, fd 4 writes the replies;
            # dup2 leaves them inheritable, every other fd of ours is close-on-exec
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)  # free 3/4 if the pipes are there
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([chromium] + FLAGS + [f'--window-size={width},{height}',
                                                           'about:blank'],
                                     close_fds=False, preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b''
        self._id = 0

    def call(self, method: str, session: Optional[str] = None, **params) -> dict:
        self._id += 1
        msg = dict(id=self._id, method=method, params=params)
        if session:
            msg['sessionId'] = session
        os.write(self._w, json.dumps(msg).encode() + b'\0')
        while True:
            while b'\0' not in self._buf:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError('chromium closed the DevTools pipe')
                self._buf += chunk
            raw, self._buf = self._buf.split(b'\0', 1)
            reply = json.loads(raw)
            if reply.get('id') == self._id:
                if 'error' in reply:
                    raise RuntimeError(f'{method}: {reply["error"]}')
                return reply.get('result', {})

    def close(self) -> None:
        try:
            self.call('Browser.close')
        except (RuntimeError, OSError):
            pass
        self.proc.wait(timeout=30)


def screenshot(url: str, out: str, width: int = 1280, height: int = 1100, timeout: float = 120.,
               settle: float = 1.0, chromium: str = 'chromium') -> None:
    pipe = Pipe(chromium, width, height)
    try:
        target = pipe.call('Target.createTarget', url=url)['targetId']
        session = pipe.call('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        deadline = time.time() + timeout
        time.sleep(2.)  # let the page start its requests
        while time.time() < deadline:
            busy = pipe.call('Runtime.evaluate', session, expression=BUSY_JS,
                             returnByValue=True)['result'].get('value')
            if not busy:
                break
            time.sleep(0.5)
        time.sleep(settle)
        data = pipe.call('Page.captureScreenshot', session, format='png')['data']
        with open(out, 'wb') as f:
            f.write(base64.b64decode(data))
    finally:
        pipe.close()


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('url')
    p.add_argument('out', help='PNG to write')
    p.add_argument('--width', type=int, default=1280)
    p.add_argument('--height', type=int, default=1100)
    p.add_argument('--timeout', type=float, default=120., help='seconds to wait for the page')
    p.add_argument('--chromium', default='chromium', help='the Chromium executable')
    args = p.parse_args(argv)
    screenshot(args.url, args.out, args.width, args.height, args.timeout, chromium=args.chromium)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
