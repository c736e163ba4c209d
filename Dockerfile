# syntax=docker/dockerfile:1.7
# chert-gateway: wheels are built in the first stage; the final image gets
# only the installed packages (no compiler, no pip cache, no wheels layer).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_SPOOL_DIR=/var/spool/chert-gateway
# The wheels are bind-mounted from the build stage, so no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels chert-gateway==0.1.0 \
    && install -d -o 10001 -g 10001 /var/spool/chert-gateway
# A numeric user, so runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /app
EXPOSE 8790 9102
# Exec form: the gateway is PID 1 and gets SIGTERM itself, then drains.
ENTRYPOINT ["chert-gateway"]
CMD ["serve"]
