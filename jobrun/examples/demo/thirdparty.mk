# Four third-party "libraries", built by a nested make that shares jobrun's pool.
all: zlib.done png.done ssl.done xml.done
	@echo 'third-party: 4 libraries built'

%.done:
	@sleep 0.5; echo '  built $*'

.PHONY: all %.done
