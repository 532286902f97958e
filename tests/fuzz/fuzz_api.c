/* Fuzz target: the socket protocol (rc_api_handle), on an offline engine
 * (loop NULL) seeded once with a small generated stream, so that recall,
 * similar and user do real work. The input is one request line as the server
 * hands it over (no '\n', NUL-terminated). Properties: never a crash; exactly
 * one JSON object without a newline in reply, with a boolean "ok", and an
 * error object with code and message when ok is false. */
#include <jansson.h>
#include <string.h>

#include "fuzz.h"
#include "recalld/api.h"
#include "recalld/config.h"
#include "recalld/engine.h"

static rc_api api;

static void setup(void)
{
    rc_config c;
    fuzz_seeded_config(&c);
    fuzz_seeded_api(&api, &c, "fuzz_api");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size > 65536 || memchr(data, '\n', size))
        return 0; /* the server never hands over such a line */
    char *line = malloc(size + 1);
    rc_buf reply;
    json_error_t je;
    FUZZ_CHECK(line != NULL);
    memcpy(line, data, size);
    line[size] = '\0';
    rc_buf_init(&reply, 4 << 20);
    rc_api_handle(&api, line, size, &reply);
    FUZZ_CHECK(reply.len > 0 && !reply.overflow);
    FUZZ_CHECK(memchr(reply.data, '\n', reply.len) == NULL);
    json_t *r = json_loadb(reply.data, reply.len, 0, &je);
    FUZZ_CHECK(json_is_object(r));
    json_t *ok = json_object_get(r, "ok");
    FUZZ_CHECK(json_is_boolean(ok));
    if (json_is_false(ok)) {
        json_t *e = json_object_get(r, "error");
        FUZZ_CHECK(json_is_string(json_object_get(e, "code")));
        FUZZ_CHECK(json_is_string(json_object_get(e, "message")));
    }
    json_decref(r);
    rc_buf_free(&reply);
    free(line);
    return 0;
}
