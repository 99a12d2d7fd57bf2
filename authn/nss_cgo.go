//go:build cgo && unix

package authn

/*
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

// winrmd_shell copies the login shell of name into out (size outlen).
// It returns 0 on success, ENOENT when there is no such user, ERANGE when buf
// is too small, another errno otherwise. *uid receives the entry's uid.
static int winrmd_shell(const char *name, char *buf, size_t buflen,
                        char *out, size_t outlen, unsigned int *uid) {
	struct passwd pw, *res = NULL;
	int rc = getpwnam_r(name, &pw, buf, buflen, &res);
	if (rc != 0)
		return rc;
	if (res == NULL)
		return ENOENT;
	const char *sh = pw.pw_shell ? pw.pw_shell : "";
	if (strlen(sh) + 1 > outlen)
		return ENAMETOOLONG;
	strcpy(out, sh);
	*uid = (unsigned int)pw.pw_uid;
	return 0;
}
*/
import "C"

import (
	"fmt"
	"syscall"
	"unsafe"
)

// NSSFromLibc reports whether account lookups go through the C library's NSS
// (sssd, winbind, LDAP and files alike): true in a cgo build.
const NSSFromLibc = true

// loginShell returns the login shell of the account name (getpwnam_r: os/user
// does not expose it). uid must match the entry, so a racing change of the
// account database cannot mix two accounts.
func loginShell(name string, uid uint32) (string, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	const outLen = 4096
	out := (*C.char)(C.malloc(outLen))
	defer C.free(unsafe.Pointer(out))
	for size := C.size_t(16 << 10); size <= 1<<20; size *= 2 {
		buf := (*C.char)(C.malloc(size))
		var got C.uint
		rc := C.winrmd_shell(cname, buf, size, out, outLen, &got)
		C.free(unsafe.Pointer(buf))
		switch syscall.Errno(rc) {
		case 0:
			if uint32(got) != uid {
				return "", fmt.Errorf("account %q changed during lookup", name)
			}
			return C.GoString(out), nil
		case syscall.ERANGE:
			continue
		case syscall.ENOENT:
			return "", fmt.Errorf("account %q vanished during lookup", name)
		default:
			return "", fmt.Errorf("getpwnam_r: %w", syscall.Errno(rc))
		}
	}
	return "", fmt.Errorf("getpwnam_r: passwd entry of %q too large", name)
}
