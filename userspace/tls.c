/* Reading and checking api.tls files; REST's client-certificate check.
 * See tls.h. gnutls does the parsing: libmicrohttpd is built on it, so it
 * is loaded anyway, and the checks here are the ones its server will make.
 * The gRPC plugin (OpenSSL underneath) gets the same PEM text. */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

/* The whole file as a C string (both servers take NUL-terminated PEM). A
 * private key must not be open to group or others: refused, not warned
 * about, as ssh does, since the agent would be serving a key that other
 * local users may have copied. */
int tls_read_pem(const char *path, bool is_key, char **out, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = -EINVAL;
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	if (st.st_size > TLS_MAX_FILE) {
		snprintf(err, errlen, "%s: larger than %d bytes; not a PEM file", path, TLS_MAX_FILE);
		goto out;
	}
	if (is_key && (st.st_mode & 077)) {
		snprintf(err, errlen, "%s: permissions %04o are too open: a private key must not be accessible "
			 "to group or others (chmod 600)", path, (unsigned)(st.st_mode & 07777));
		rc = -EPERM;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (strlen(buf) != len) {
		snprintf(err, errlen, "%s: contains a NUL byte; not a PEM file", path);
		goto out;
	}
	*out = buf;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

static gnutls_datum_t datum(const char *pem)
{
	gnutls_datum_t d = { (unsigned char *)pem, (unsigned)strlen(pem) };
	return d;
}

static void free_crts(gnutls_x509_crt_t *crts, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
}

/* At least one certificate, all of them parsable. */
static int import_crts(const char *path, const char *pem, gnutls_x509_crt_t **crts, unsigned *n, char *err,
		       size_t errlen)
{
	gnutls_datum_t d = datum(pem);
	int rc;

	*crts = NULL;
	*n = 0;
	rc = gnutls_x509_crt_list_import2(crts, n, &d, GNUTLS_X509_FMT_PEM, 0);
	if (rc < 0 || *n == 0) {
		snprintf(err, errlen, "%s: no PEM certificate in it (%s)", path,
			 rc < 0 ? gnutls_strerror(rc) : "empty");
		if (rc >= 0)
			free_crts(*crts, *n);
		*crts = NULL;
		*n = 0;
		return -EINVAL;
	}
	return 0;
}

static void free_crls(gnutls_x509_crl_t *crls, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crl_deinit(crls[i]);
	gnutls_free(crls);
}

/* crl_file: at least one CRL, each parsable and signed by a client CA (a
 * CRL from elsewhere would revoke nothing the agent trusts, and is more
 * likely a wrong file than meant). One past its next update is enforced
 * all the same, and said: revocations do not expire. */
static int import_crls(const char *path, const char *pem, gnutls_x509_crt_t *cas, unsigned ncas,
		       gnutls_x509_crl_t **crls, unsigned *n, char *err, size_t errlen)
{
	const unsigned stale = GNUTLS_CERT_INVALID | GNUTLS_CERT_REVOCATION_DATA_SUPERSEDED |
			       GNUTLS_CERT_REVOCATION_DATA_ISSUED_IN_FUTURE;
	gnutls_datum_t d = datum(pem);
	int rc;

	*crls = NULL;
	*n = 0;
	rc = gnutls_x509_crl_list_import2(crls, n, &d, GNUTLS_X509_FMT_PEM, 0);
	if (rc < 0 || *n == 0) {
		snprintf(err, errlen, "%s: no PEM CRL in it (%s)", path, rc < 0 ? gnutls_strerror(rc) : "empty");
		if (rc >= 0)
			free_crls(*crls, *n);
		*crls = NULL;
		*n = 0;
		return -EINVAL;
	}
	for (unsigned i = 0; i < *n; i++) {
		unsigned v = 0;
		rc = gnutls_x509_crl_verify((*crls)[i], cas, ncas, 0, &v);
		if (rc < 0 || (v & ~stale)) {
			snprintf(err, errlen, "%s: CRL %u is not signed by a CA of client_ca_file", path, i + 1);
			free_crls(*crls, *n);
			*crls = NULL;
			*n = 0;
			return -EINVAL;
		}
		time_t next = gnutls_x509_crl_get_next_update((*crls)[i]);
		if (v || (next != (time_t)-1 && next < time(NULL)))
			log_warn("tls: %s: CRL %u is past its next update; enforced all the same", path, i + 1);
	}
	return 0;
}

/* crt against the CRLs of c: 0, or -EACCES with why. */
static int crt_revoked(const struct tls_creds *c, gnutls_x509_crt_t crt, char *why, size_t whylen)
{
	if (!c || !c->ncrls)
		return 0;
	int r = gnutls_x509_crt_check_revocation(crt, c->crls, c->ncrls);
	if (r == 0)
		return 0;
	if (r < 0) {
		snprintf(why, whylen, "client certificate revocation check failed: %s", gnutls_strerror(r));
		return -EACCES;
	}
	unsigned char serial[40];
	size_t sl = sizeof(serial);
	char hex[2 * sizeof(serial) + 1] = "?";
	if (gnutls_x509_crt_get_serial(crt, serial, &sl) >= 0)
		for (size_t i = 0; i < sl; i++)
			snprintf(hex + 2 * i, 3, "%02x", serial[i]);
	snprintf(why, whylen, "client certificate revoked (serial %s)", hex);
	return -EACCES;
}

int tls_pem_revoked(const struct tls_creds *c, const char *pem, size_t len, char *why, size_t whylen)
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t d = { (unsigned char *)pem, (unsigned)len };

	if (!c || !c->ncrls)
		return 0;
	if (gnutls_x509_crt_init(&crt) < 0 || gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) < 0) {
		gnutls_x509_crt_deinit(crt);
		snprintf(why, whylen, "client certificate does not parse");
		return -EACCES;
	}
	int rc = crt_revoked(c, crt, why, whylen);
	gnutls_x509_crt_deinit(crt);
	return rc;
}

static void crt_dn(gnutls_x509_crt_t crt, char *out, size_t outlen)
{
	gnutls_datum_t dn = { NULL, 0 };

	snprintf(out, outlen, "?");
	if (gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0 && dn.data)
		snprintf(out, outlen, "%.*s", (int)dn.size, (const char *)dn.data);
	gnutls_free(dn.data);
}

/* The key parses and is the certificate's: same public key id. */
static int check_key(const struct api_tls_config *cfg, const char *key_pem, gnutls_x509_crt_t crt, char *err,
		     size_t errlen)
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_datum_t d = datum(key_pem);
	unsigned char kid[64], cid[64];
	size_t klen = sizeof(kid), clen = sizeof(cid);
	int rc = -EINVAL;

	if (gnutls_x509_privkey_init(&key) < 0) {
		snprintf(err, errlen, "%s: out of memory", cfg->key_file);
		return -ENOMEM;
	}
	int g = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN);
	if (g < 0) {
		snprintf(err, errlen, "%s: not an unencrypted PEM private key (%s)", cfg->key_file, gnutls_strerror(g));
		goto out;
	}
	if (gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, kid, &klen) < 0 ||
	    gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA256, cid, &clen) < 0 || klen != clen ||
	    memcmp(kid, cid, klen)) {
		snprintf(err, errlen, "%s: the key does not match the certificate in %s", cfg->key_file,
			 cfg->cert_file);
		goto out;
	}
	rc = 0;
out:
	gnutls_x509_privkey_deinit(key);
	return rc;
}

int tls_creds_load(const struct api_tls_config *cfg, struct tls_creds **out, char *err, size_t errlen)
{
	gnutls_x509_crt_t *crts = NULL, *cas = NULL;
	unsigned ncrts = 0, ncas = 0;
	struct tls_creds *c;
	int rc;

	*out = NULL;
	if (!cfg->cert_file)
		return 0;
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if ((rc = tls_read_pem(cfg->cert_file, false, &c->cert_pem, err, errlen)) ||
	    (rc = tls_read_pem(cfg->key_file, true, &c->key_pem, err, errlen)) ||
	    (cfg->client_ca_file && (rc = tls_read_pem(cfg->client_ca_file, false, &c->ca_pem, err, errlen))) ||
	    (rc = import_crts(cfg->cert_file, c->cert_pem, &crts, &ncrts, err, errlen)) ||
	    (rc = check_key(cfg, c->key_pem, crts[0], err, errlen)) ||
	    (c->ca_pem && (rc = import_crts(cfg->client_ca_file, c->ca_pem, &cas, &ncas, err, errlen))) ||
	    (c->ca_pem && cfg->crl_file &&
	     ((rc = tls_read_pem(cfg->crl_file, false, &c->crl_pem, err, errlen)) ||
	      (rc = import_crls(cfg->crl_file, c->crl_pem, cas, ncas, (gnutls_x509_crl_t **)&c->crls, &c->ncrls,
				err, errlen)))))
		goto fail;
	crt_dn(crts[0], c->subject, sizeof(c->subject));
	/* Served anyway (the operator may be replacing it), but said. */
	time_t exp = gnutls_x509_crt_get_expiration_time(crts[0]);
	if (exp != (time_t)-1 && exp < time(NULL))
		log_warn("tls: %s: the certificate (%s) has expired; clients will refuse it", cfg->cert_file,
			 c->subject);
	free_crts(crts, ncrts);
	free_crts(cas, ncas);
	*out = c;
	return 0;
fail:
	free_crts(crts, ncrts);
	free_crts(cas, ncas);
	tls_creds_free(c);
	return rc;
}

void tls_creds_free(struct tls_creds *c)
{
	if (!c)
		return;
	free(c->cert_pem);
	if (c->key_pem) {
		explicit_bzero(c->key_pem, strlen(c->key_pem));
		free(c->key_pem);
	}
	free(c->ca_pem);
	free(c->crl_pem);
	free_crls(c->crls, c->ncrls);
	free(c);
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool tls_creds_equal_keys(const struct tls_creds *a, const struct tls_creds *b)
{
	if (!a || !b)
		return a == b;
	return same(a->cert_pem, b->cert_pem) && same(a->key_pem, b->key_pem) && same(a->ca_pem, b->ca_pem);
}

bool tls_creds_equal(const struct tls_creds *a, const struct tls_creds *b)
{
	return tls_creds_equal_keys(a, b) && (!a || same(a->crl_pem, b->crl_pem));
}

int tls_peer_check(void *session, const struct tls_creds *c, char *subject, size_t sublen, char *why,
		   size_t whylen)
{
	gnutls_session_t s = session;
	const gnutls_datum_t *peers;
	gnutls_x509_crt_t crt = NULL;
	unsigned n = 0, status = 0;
	int rc;

	subject[0] = '\0';
	peers = gnutls_certificate_get_peers(s, &n);
	if (!peers || !n) {
		snprintf(why, whylen, "no client certificate");
		return -EACCES;
	}
	rc = gnutls_certificate_verify_peers2(s, &status);
	if (rc < 0) {
		snprintf(why, whylen, "client certificate not verified: %s", gnutls_strerror(rc));
		return -EACCES;
	}
	if (status) {
		gnutls_datum_t txt = { NULL, 0 };
		if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0) >= 0 && txt.data)
			snprintf(why, whylen, "client certificate not trusted: %s", (const char *)txt.data);
		else
			snprintf(why, whylen, "client certificate not trusted (status 0x%x)", status);
		gnutls_free(txt.data);
		return -EACCES;
	}
	if (gnutls_x509_crt_init(&crt) < 0 || gnutls_x509_crt_import(crt, &peers[0], GNUTLS_X509_FMT_DER) < 0) {
		gnutls_x509_crt_deinit(crt);
		snprintf(why, whylen, "client certificate does not parse");
		return -EACCES;
	}
	crt_dn(crt, subject, sublen);
	rc = crt_revoked(c, crt, why, whylen);
	gnutls_x509_crt_deinit(crt);
	return rc;
}
