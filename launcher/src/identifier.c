#include "identifier.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_alnum_ascii(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool is_identifier(const char *s)
{
	size_t len = strlen(s);
	if (len == 0 || len > IDENTIFIER_MAX_LENGTH)
		return false;
	/* Runs of [A-Za-z0-9] joined by single separators: no separator first, last or twice. */
	bool after_separator = true;
	for (size_t i = 0; i < len; i++) {
		if (is_alnum_ascii(s[i])) {
			after_separator = false;
		} else if (s[i] == '.' || s[i] == '_' || s[i] == '-') {
			if (after_separator)
				return false;
			after_separator = true;
		} else {
			return false;
		}
	}
	return !after_separator;
}

/* s as JSON.stringify quotes it (what node's message shows): bytes >= 0x80 are written as they
 * are, which is the same text for UTF-8. */
static void put_quoted(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\b': fputs("\\b", out); break;
		case '\f': fputs("\\f", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		default:
			if (*p < 0x20)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
	}
	fputc('"', out);
}

bool check_identifier(const char *action, const char *what, const char *s)
{
	if (is_identifier(s))
		return true;
	/* Built whole, then written at once: one line on containerd's stderr. */
	char *msg = NULL;
	size_t msg_len = 0;
	FILE *out = open_memstream(&msg, &msg_len);
	if (!out) {
		fprintf(stderr, PROG ": %s: invalid %s: containerd identifiers must match %s with at most %d characters\n",
			action, what, IDENTIFIER_RULE, IDENTIFIER_MAX_LENGTH);
		return false;
	}
	size_t len = strlen(s);
	fprintf(out, PROG ": %s: invalid %s ", action, what);
	put_quoted(out, s);
	if (len == 0)
		fputs(": it is empty; ", out);
	else if (len > IDENTIFIER_MAX_LENGTH)
		fprintf(out, ": it is %zu bytes long; ", len);
	else
		fputs(": ", out);
	fprintf(out, "containerd identifiers must match %s with at most %d characters\n", IDENTIFIER_RULE,
		IDENTIFIER_MAX_LENGTH);
	if (fclose(out) == 0)
		(void)write_all(2, msg, msg_len); /* stderr gone: the exit status still says it */
	free(msg);
	return false;
}
