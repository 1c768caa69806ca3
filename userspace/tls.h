/* TLS material for the REST and gRPC servers (api.tls), read and checked
 * once for both.
 *
 * tls_creds_load reads the PEM files named by the config and refuses them
 * the way a user can act on: "file: message" for a file that is missing,
 * unreadable, not a regular file, too large, without a certificate, with a
 * key that does not parse (or is encrypted), a key that does not belong to
 * the certificate, or a key file that group or others may read (like ssh).
 * The result owns NUL-terminated copies of the PEM text (both servers take
 * PEM from memory), so a file replaced later changes nothing until the next
 * load (SIGHUP). The loader runs on the core loop's thread; the result is
 * immutable once built, so the gRPC plugin may copy from it there too.
 *
 * tls_peer_check is REST's client-certificate check under mTLS: gnutls
 * only asks for a certificate during the handshake (libmicrohttpd sets
 * GNUTLS_CERT_REQUEST when given a trust list); it is verified here, per
 * request, against that trust list, and against the CRLs of crl_file.
 * gRPC verifies the chain in its handshake; tls_pem_revoked is its CRL
 * check, per call (neither library's server takes CRLs from memory).
 * Revocation is checked per request and per call, so a new crl_file
 * (SIGHUP) refuses a revoked certificate on a connection already open. */
#ifndef OS_TLS_H
#define OS_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct api_tls_config;

#define TLS_MAX_FILE (1024 * 1024)

/* TLS 1.2 and 1.3 only (gnutls priority string for libmicrohttpd). */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

struct tls_creds {
	char *cert_pem;      /* the server's certificate chain */
	char *key_pem;       /* its private key */
	char *ca_pem;        /* client CAs: mTLS when not NULL */
	char *crl_pem;       /* crl_file, NULL when none */
	void *crls;          /* its CRLs (gnutls_x509_crl_t[]), each signed by a client CA */
	unsigned ncrls;
	char subject[256];   /* the server certificate's subject DN, for the log */
};

/* NULL *out and 0 when cfg names no certificate (TLS off); else 0 with
 * *out, or -errno / -EINVAL with err "file: message". */
int tls_creds_load(const struct api_tls_config *cfg, struct tls_creds **out, char *err, size_t errlen);
void tls_creds_free(struct tls_creds *c);  /* accepts NULL */
/* One PEM file as a NUL-terminated string (malloc'd into *out): a regular
 * file of at most TLS_MAX_FILE bytes without NUL bytes; with is_key, one
 * that group and others cannot access. 0 or -errno with err "file: why".
 * (The One Shield client reads its CA and client certificate with it.) */
int tls_read_pem(const char *path, bool is_key, char **out, char *err, size_t errlen);
/* Same files' content (both NULL counts as equal); _keys: the same but for
 * crl_file (what a TLS server holds: a new CRL needs no new listener). */
bool tls_creds_equal(const struct tls_creds *a, const struct tls_creds *b);
bool tls_creds_equal_keys(const struct tls_creds *a, const struct tls_creds *b);

/* session: a gnutls_session_t of a connection whose server has a trust
 * list. 0 with the verified client certificate's subject DN in subject;
 * -EACCES with why filled ("no client certificate", "client certificate
 * not trusted: ..."). */
int tls_peer_check(void *session, const struct tls_creds *c, char *subject, size_t sublen, char *why,
		   size_t whylen);
/* A client certificate (PEM, as gRPC gives it) against c's CRLs: 0 when it
 * is not revoked (or there are no CRLs), -EACCES with why ("client
 * certificate revoked (serial ..)", or why the check could not be made:
 * refused then too). */
int tls_pem_revoked(const struct tls_creds *c, const char *pem, size_t len, char *why, size_t whylen);

#endif
