# Three images from one file:
#   chaos-fs        /usr/local/bin/chaosfs (+ its compiled extension) and fusermount3
#   chaos-scripts   /scripts/init.sh, /scripts/wait-fuse.sh (self-contained executables) + a static sh
#   chaos-injector  the admission webhook, as a non-root user
# BASE must be Debian bookworm-like (apt, python3 3.11). Here it is built offline with
#   images/build.sh            (BASE=localhost/debian-minbase:bookworm, made by debootstrap)
# elsewhere e.g.  docker build --target chaos-fs -t chaos-fs .
ARG BASE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------- build: wheels and venvs
FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
      libfuse3-dev pkg-config ca-certificates busybox-static binutils patchelf \
 && rm -rf /var/lib/apt/lists/*
# images/build.sh fills images/wheelhouse from the host's pip and sets PIP_OFFLINE=1, so the
# build needs no registry for Python; with an empty wheelhouse pip falls back to the index.
ARG PIP_OFFLINE=
COPY images/wheelhouse/ /wheelhouse/
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install -q --find-links /wheelhouse ${PIP_OFFLINE:+--no-index} \
      "setuptools>=77" wheel "cython>=3.0" "grpcio-tools>=1.60"
# pip/setuptools are not needed at run time; compiled .pyc stay for a fast start.
RUN printf '%s\n' '#!/bin/sh' 'set -e' 'v=$1' \
      'rm -rf $v/lib/python3*/site-packages/pip* $v/lib/python3*/site-packages/setuptools* $v/lib/python3*/site-packages/pkg_resources' \
      'rm -rf $v/lib/python3*/site-packages/_distutils_hack $v/lib/python3*/site-packages/distutils-precedence.pth $v/bin/pip* $v/bin/activate*' \
      'find $v -name "*.pyx" -delete' \
      'find $v -name "*.so" -exec strip --strip-unneeded {} +' > /usr/local/bin/slim-venv \
 && chmod +x /usr/local/bin/slim-venv
# Dependencies before the source, so editing code rebuilds only the project's own wheel.
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; d = tomllib.load(open('/src/pyproject.toml', 'rb')); \
print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/build/bin/pip wheel -q --find-links /wheelhouse ${PIP_OFFLINE:+--no-index} -w /wheels \
      -r /tmp/requirements.txt

# The full venv's dependencies: injector and CLIs.
FROM build AS deps-full
RUN python3 -m venv /opt/chaosfs \
 && /opt/chaosfs/bin/pip install -q --no-index --find-links /wheels -r /tmp/requirements.txt

# The daemon's dependencies: without the Kubernetes client and the other webhook-only
# packages (they are most of the full venv).
FROM build AS deps-fs
ARG WEBHOOK_ONLY="kubernetes jsonpatch kubernetes-validate"
RUN python3 -c "import re, sys; skip = set(sys.argv[1].split()); \
[print(r) for r in open('/tmp/requirements.txt').read().split() \
 if re.split(r'[<>=!~;\[ ]', r)[0].lower() not in skip]" "$WEBHOOK_ONLY" > /tmp/fs-requirements.txt \
 && python3 -m venv /opt/chaosfs \
 && /opt/chaosfs/bin/pip install -q --no-index --find-links /wheels -r /tmp/fs-requirements.txt

# The project's own wheel (Cython extension, gRPC stubs).
FROM build AS project-wheel
COPY . /src
RUN cd /src && /opt/build/bin/pip wheel -q --no-deps --no-build-isolation -w /dist .

FROM deps-full AS venv-full
COPY --from=project-wheel /dist/ /dist/
RUN /opt/chaosfs/bin/pip install -q --no-index --no-deps /dist/chaosfs-*.whl && slim-venv /opt/chaosfs

FROM deps-fs AS venv-fs
COPY --from=project-wheel /dist/ /dist/
RUN /opt/chaosfs/bin/pip install -q --no-index --no-deps /dist/chaosfs-*.whl && slim-venv /opt/chaosfs

# -------------------------------------------------- build: self-contained script executables
# Only scripts/ goes in, so daemon or injector edits do not rebuild these.
FROM build AS scripts-build
COPY scripts/ /src/scripts/
ARG PIP_OFFLINE=
RUN ${PIP_OFFLINE:+env PIP_NO_INDEX=1} PIP_FIND_LINKS=/wheelhouse /src/scripts/build.sh /out/scripts \
 && mkdir -p /out/bin /out/tmp && chmod 1777 /out/tmp \
 && cp /bin/busybox /out/bin/busybox && ln -s busybox /out/bin/sh

# ------------------------------------------------------------- runtime: python, no compiler
FROM ${BASE} AS py-runtime
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/*.log \
 # never imported by the programs here
 && rm -rf /usr/lib/python3*/test /usr/lib/python3*/pydoc_data /usr/lib/python3*/lib2to3 \
           /usr/lib/python3*/idlelib /usr/lib/python3*/tkinter

# ------------------------------------------------------------------------------- chaos-fs
FROM py-runtime AS chaos-fs
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/*.log
COPY --from=venv-fs /opt/chaosfs /opt/chaosfs
RUN ln -s /opt/chaosfs/bin/chaosfs /usr/local/bin/chaosfs \
 && ln -s /opt/chaosfs/bin/chaosfs-ctl /usr/local/bin/chaosfs-ctl \
 && /usr/local/bin/chaosfs -version && /usr/local/bin/chaosfs-ctl --help >/dev/null
# Like 0.9's image: no entrypoint, the pod spec gives the command.
CMD ["/usr/local/bin/chaosfs", "-version"]

# -------------------------------------------------------------------------- chaos-scripts
FROM scratch AS chaos-scripts
COPY --from=scripts-build /out/ /
ENV PATH=/bin:/scripts
CMD ["/scripts/init.sh", "-h"]

# ------------------------------------------------------------------------- chaos-injector
FROM py-runtime AS chaos-injector
COPY --from=venv-full /opt/chaosfs /opt/chaosfs
RUN echo 'injector:x:10001:10001:chaos injector:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'injector:x:10001:' >> /etc/group \
 && ln -s /opt/chaosfs/bin/chaos-injector /usr/local/bin/chaos-injector \
 && /usr/local/bin/chaos-injector --help >/dev/null
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/chaos-injector"]
CMD ["webhook"]

# ---------------------------------------------------------- e2e-app (tests only, e2e/run)
FROM py-runtime AS e2e-app
COPY e2e/app.py /app.py
CMD ["python3", "/app.py", "--data", "/data", "--report", "/tmp"]

# ---------------------------------------------- e2e-etcd (tests only: 0.9's etcd example)
FROM ${BASE} AS e2e-etcd
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/* \
 && etcd --version >/dev/null && etcdctl version >/dev/null
CMD ["etcd"]
