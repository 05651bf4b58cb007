# ghm for C and C++ users (GNU make). Cargo does the building; this file installs the header,
# the static and shared libraries, a pkg-config file and a CMake package, and builds the C
# example. The shared
# library is installed as libghm.so.<version>, with the links libghm.so.<abi> (its SONAME) and
# libghm.so, as system libraries are.
#
#   make                                  # = make build: the release libghm.a and libghm.so
#   make install PREFIX=$HOME/.local      # then: cc app.c $(pkg-config --cflags --libs ghm)
#   make install DESTDIR=/tmp/stage       # staged install (packaging); ghm.pc still says PREFIX
#   make install LIBDIR=path/to/release   # install libraries built elsewhere (no cargo run)
#   make uninstall PREFIX=$HOME/.local
#   make example                          # build and run ffi-tests/examples/train_head.c
#
# Nothing is written into the source tree except under cargo's target directory.

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
INSTALL ?= install
# Debug info (the Rust standard library's, in libghm.a: 27 MB -> 18 MB) and unneeded symbols
# are stripped from the installed libraries; `make install STRIP=` keeps them.
STRIP ?= strip
# The archive cargo builds holds the whole Rust standard library, with the LLVM bitcode of
# every object (for link-time optimisation). Where the tools can (GNU ld and objcopy: ELF
# systems), `make install` installs instead one relocatable object of what the `ghm_`
# functions reach (`ld -r --gc-sections`), without bitcode or debug info and with only the
# `ghm_` symbols global (so it cannot clash with another Rust static library in the same
# program): 3.5 MB instead of 17 MB, measured on x86_64. `make install SLIM=` installs the
# archive as built (stripped of its debug info). A failing slim step falls back to that, saying so.
SLIM ?= yes
OBJCOPY ?= objcopy

# Where cargo puts the release build (it honours CARGO_TARGET_DIR; so do we).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_DIR := $(TARGET_DIR)/release
# Where `install` takes libghm.a and libghm.so from (not where they go: that is $(PREFIX)/lib).
# Point it at a directory built elsewhere and `install` runs no cargo at all.
LIBDIR ?= $(RELEASE_DIR)

# The native libraries the Rust static library needs (`rustc --print native-static-libs`);
# the same list is Libs.private in ghm.pc.in.
NATIVE_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

# The version (Cargo.toml's) and the shared library's ABI name: libghm.so.<abi> is its SONAME
# (build.rs sets it), <abi> the major version from 1.0 on and 0.<minor> before it.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ABI := $(shell echo '$(VERSION)' | awk -F. '{ print ($$1 == 0) ? "0." $$2 : $$1 }')
SONAME := libghm.so.$(ABI)
REALNAME := libghm.so.$(VERSION)

EXAMPLE_SRC := ffi-tests/examples/train_head.c
EXAMPLE_BIN := $(TARGET_DIR)/c-examples/train_head
EXAMPLE_CFLAGS ?= -std=c99 -pedantic -Wall -Wextra -Werror -O2

.PHONY: all build install uninstall example slim-archive

all: build

build:
	$(CARGO) rustc --release --lib --crate-type staticlib,cdylib

# Build first only when installing our own build; a LIBDIR given by the caller is used as is.
ifeq ($(LIBDIR),$(RELEASE_DIR))
install: build
endif

install:
	$(INSTALL) -d '$(DESTDIR)$(PREFIX)/include' '$(DESTDIR)$(PREFIX)/lib/pkgconfig'
	$(INSTALL) -m 644 include/ghm.h '$(DESTDIR)$(PREFIX)/include/ghm.h'
	$(INSTALL) -m 644 '$(LIBDIR)/libghm.a' '$(DESTDIR)$(PREFIX)/lib/libghm.a'
	$(if $(SLIM),$(MAKE) --no-print-directory slim-archive \
	    ARCHIVE='$(DESTDIR)$(PREFIX)/lib/libghm.a' || echo 'note: libghm.a installed as built (no slim step)')
	$(INSTALL) -m 755 '$(LIBDIR)/libghm.so' '$(DESTDIR)$(PREFIX)/lib/$(REALNAME)'
	$(if $(STRIP),$(STRIP) --strip-debug '$(DESTDIR)$(PREFIX)/lib/libghm.a')
	$(if $(STRIP),$(STRIP) --strip-unneeded '$(DESTDIR)$(PREFIX)/lib/$(REALNAME)')
	ln -sf '$(REALNAME)' '$(DESTDIR)$(PREFIX)/lib/$(SONAME)'
	ln -sf '$(SONAME)' '$(DESTDIR)$(PREFIX)/lib/libghm.so'
	$(INSTALL) -d '$(DESTDIR)$(PREFIX)/lib/cmake/ghm'
	for f in ghm.pc.in cmake/ghmConfig.cmake.in cmake/ghmConfigVersion.cmake.in; do \
	  case $$f in \
	    ghm.pc.in) dest=lib/pkgconfig/ghm.pc ;; \
	    *) dest=lib/cmake/ghm/$$(basename $$f .in) ;; \
	  esac; \
	  tmp=$$(mktemp) && \
	  sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@ABI@|$(ABI)|g' \
	      -e 's|@SONAME@|$(SONAME)|g' -e 's|@REALNAME@|$(REALNAME)|g' $$f > "$$tmp" && \
	  $(INSTALL) -m 644 "$$tmp" '$(DESTDIR)$(PREFIX)/'"$$dest"; \
	  status=$$?; rm -f "$$tmp"; [ $$status -eq 0 ] || exit $$status; \
	done

# Replaces $(ARCHIVE) by an archive of one object: the ghm_ functions and what they reach,
# with each kind of section merged into one (`.text.*` into `.text`, and so on: rustc puts every
# function in a section of its own, and their names and headers were 0.35 MB of the archive).
# Nothing is replaced unless every step succeeds and the result still defines every ghm_
# function the archive did.
slim-archive:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	nm -g --defined-only '$(ARCHIVE)' 2>/dev/null | awk '$$2 == "T" && $$3 ~ /^ghm_/ { print $$3 }' \
	    | sort -u > "$$tmp/keep" && [ -s "$$tmp/keep" ] && \
	$(LD) -r --gc-sections $$(sed 's/^/-u /' "$$tmp/keep") -o "$$tmp/kept.o" \
	    --whole-archive '$(ARCHIVE)' --no-whole-archive && \
	printf '%s\n' 'SECTIONS {' '.text : { *(.text .text.*) }' \
	    '.rodata : { *(.rodata .rodata.*) }' '.data.rel.ro : { *(.data.rel.ro .data.rel.ro.*) }' \
	    '.data : { *(.data .data.*) }' '.bss : { *(.bss .bss.*) }' '}' > "$$tmp/merge.ld" && \
	$(LD) -r -T "$$tmp/merge.ld" -o "$$tmp/all.o" "$$tmp/kept.o" && \
	$(OBJCOPY) --remove-section=.llvmbc --remove-section=.llvmcmd --remove-section=.comment \
	    --strip-debug --keep-global-symbols="$$tmp/keep" "$$tmp/all.o" "$$tmp/ghm.o" && \
	$(if $(STRIP),$(STRIP) --strip-unneeded "$$tmp/ghm.o" &&) \
	nm -g --defined-only "$$tmp/ghm.o" | awk '$$2 == "T" && $$3 ~ /^ghm_/ { print $$3 }' \
	    | sort -u | cmp -s - "$$tmp/keep" && \
	rm -f "$$tmp/libghm.a" && $(AR) rcs "$$tmp/libghm.a" "$$tmp/ghm.o" && \
	cp "$$tmp/libghm.a" '$(ARCHIVE)'

uninstall:
	rm -f '$(DESTDIR)$(PREFIX)/include/ghm.h' \
	      '$(DESTDIR)$(PREFIX)/lib/libghm.a' \
	      '$(DESTDIR)$(PREFIX)/lib/libghm.so' \
	      '$(DESTDIR)$(PREFIX)/lib/$(SONAME)' \
	      '$(DESTDIR)$(PREFIX)/lib/$(REALNAME)' \
	      '$(DESTDIR)$(PREFIX)/lib/pkgconfig/ghm.pc' \
	      '$(DESTDIR)$(PREFIX)/lib/cmake/ghm/ghmConfig.cmake' \
	      '$(DESTDIR)$(PREFIX)/lib/cmake/ghm/ghmConfigVersion.cmake'

# Linked statically against the fresh build, so it runs without LD_LIBRARY_PATH.
example: build
	$(INSTALL) -d '$(dir $(EXAMPLE_BIN))'
	$(CC) $(EXAMPLE_CFLAGS) $(CFLAGS) -Iinclude $(EXAMPLE_SRC) '$(RELEASE_DIR)/libghm.a' \
	    $(LDFLAGS) $(NATIVE_LIBS) -o '$(EXAMPLE_BIN)'
	'$(EXAMPLE_BIN)'
