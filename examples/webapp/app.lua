-- examples/webapp/app.lua: a small browser-facing app. A login form, a session kept in a
-- cookie, an upload form (one file or several), the user's uploads listed and downloadable,
-- and a logout button; everything behind CSRF protection and the usual security headers.
--
--   $ build/loom examples/webapp/app.lua [port] [host]
--   listening on http://127.0.0.1:8080             (then open it, and log in as below)
--
-- The demo user is "demo", its password "correct horse battery staple" (USERS below).
-- Environment: WEBAPP_DATA, the directory uploads are saved in (it must exist; without it,
-- a fresh private directory under $TMPDIR or /tmp is made at start and removed at
-- shutdown); WEBAPP_SECRET, the session key (without it a random one: sessions then end
-- when the process does).
--
-- Routes:
--   GET  /              the login page, or the user's page once logged in (public/)
--   POST /login         form: user, password; right: session.user set, 303 to /;
--                       wrong: 303 to /?login=failed, no session
--   GET  /uploads       the user's uploads, JSON {user, uploads = [{id, name, type, bytes, at}]}
--   GET  /uploads/{id}  one of them, as an attachment
--   POST /upload        multipart/form-data, files in the field "file" (one or more): saved
--                       under generated names; 303 to / (or JSON with Accept: application/json)
--   POST /logout        clears the session, 303 to /
--   GET  /static/...    public/: the pages' CSS and script
--
-- What each piece does:
--   loom.secure_headers  nosniff, frame-ancestors 'none', a CSP that allows this origin only
--   loom.csrf            a POST from another origin (a form on evil.example) is 403 before
--                        any handler runs; no token in the forms (docs/web.md, "CSRF")
--   loom.cookie_session  req.session, sealed with AES-GCM in an HttpOnly, SameSite=Lax cookie
--   max_body             10 MiB: a bigger upload is 413 (before its body is read when the
--                        Content-Length says so)
-- A client's filename is never a path here: each file is saved as DATA/<32 random hex
-- digits>, and the name it was sent with is kept beside it (in memory) for display and for
-- the download's Content-Disposition. Upload metadata lives in this process only; a real
-- app keeps it in a database.
local port = tonumber(arg[1] or os.getenv("PORT")) or 8080
local host = arg[2] or os.getenv("HOST") or "127.0.0.1"
local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."

local crypto, fs, json = loom.crypto, loom.fs, loom.json

-- The demo's only user. A real app keeps a slow password hash (argon2, scrypt), not the
-- password; both sides are hashed to 32 bytes here so crypto.equal compares equal lengths
-- in constant time whatever was typed.
local USERS = { demo = "correct horse battery staple" }
local MAX_BODY = 10 * 1024 * 1024 -- bytes of one request: a bigger upload is 413
local MAX_FILES = 20              -- files of one upload (max_parts bounds the parts)

local app = loom.app{
    max_body = MAX_BODY,
    max_parts = MAX_FILES + 5,
    -- gzip, or br, for the answers of a text type from 256 bytes up (the pages, the CSS,
    -- the script, the JSON), as the browser's Accept-Encoding asks; downloads are
    -- application/octet-stream and go out as they are
    compress = { min_size = 256 },
}

-- Where uploads go: WEBAPP_DATA, or a new directory of our own (mkdir fails if the name
-- exists, so nobody else's directory is ever taken over).
local data = os.getenv("WEBAPP_DATA")
local own_data = not data
if own_data then
    data = (os.getenv("TMPDIR") or "/tmp") .. "/loom-webapp-" .. crypto.hex(crypto.random(8))
    assert(fs.mkdir(data, tonumber("700", 8)))
end
local st = assert(fs.stat(data))
assert(st.type == "directory", "WEBAPP_DATA is not a directory: " .. data)
io.stderr:write("webapp: uploads go to ", data, "\n")

local uploads = {} -- user -> list of {id, name, type, bytes, at}; id -> its file in data/

app:use(loom.secure_headers{ csp = "default-src 'self'; form-action 'self'" })
app:use(loom.csrf())
app:use(loom.cookie_session{
    secret = os.getenv("WEBAPP_SECRET") or crypto.random(32),
    name = "webapp_session",
    encrypt = true,     -- the client cannot read the session, only send it back
    max_age = 8 * 3600,
})

local function see_other(location)
    return { status = 303, headers = { location = location } }
end

local function page(name)
    return { file = here .. "/public/" .. name, headers = { ["cache-control"] = "no-store" } }
end

app:get("/", function(req)
    return page(req.session.user and "home.html" or "login.html")
end)

app:post("/login", function(req)
    local form = assert(req:form())
    local user, password = form.user, form.password
    if type(user) ~= "string" or type(password) ~= "string" then
        return { status = 400, text = "user and password expected" }
    end
    -- an unknown user costs the same hashing and comparison as a known one
    local same = crypto.equal(crypto.sha256(password), crypto.sha256(USERS[user] or ""))
    if same and USERS[user] then
        req.session.user = user
        return see_other("/")
    end
    return see_other("/?login=failed")
end)

app:post("/logout", function(req)
    -- an empty session deletes the cookie. The session lives in the cookie alone, so a copy
    -- of it taken before still works until max_age; to end sessions server-side, give
    -- cookie_session a store (docs/web.md, "The store hook")
    for k in pairs(req.session) do req.session[k] = nil end
    return see_other("/")
end)

-- The user's name, or an answer for a client that has not logged in.
local function who(req)
    local user = req.session.user
    if user then return user end
    return nil, { status = 401, json = { error = "log in first" } }
end

app:get("/uploads", function(req)
    local user, denied = who(req)
    if not user then return denied end
    return { json = { user = user, uploads = json.array(uploads[user]) },
        headers = { ["cache-control"] = "no-store" } }
end)

app:get("/uploads/{id}", function(req)
    local user, denied = who(req)
    if not user then return denied end
    for _, u in ipairs(uploads[user] or {}) do
        if u.id == req.params.id then
            -- RFC 6266: the name percent-encoded as UTF-8, so nothing in it can end the header
            local name = u.name:gsub("[^%w._-]", function(c) return ("%%%02X"):format(c:byte()) end)
            return { file = data .. "/" .. u.id, headers = {
                -- never the client's type: an uploaded page must not run on this origin
                ["content-type"] = "application/octet-stream",
                ["content-disposition"] = "attachment; filename*=UTF-8''" .. name,
            } }
        end
    end
    return { status = 404, json = { error = "no such upload" } }
end)

app:post("/upload", function(req)
    local user, denied = who(req)
    if not user then return denied end -- answered before the body is read
    local saved = {}
    local ok, err = pcall(function()
        for part in req:parts() do
            -- a form whose file input was left empty still sends the part, with filename ""
            if part.name == "file" and part.filename and part.filename ~= "" then
                if #saved == MAX_FILES then error("too many files", 0) end
                local u = {
                    id = crypto.hex(crypto.random(16)),
                    -- display only: the last segment of what the client sent
                    name = (part.filename:match("[^/\\]*$"):sub(1, 200):gsub("^$", "upload")),
                    type = part.type,
                    at = os.time(),
                }
                saved[#saved + 1] = u -- before the save: a body cut short leaves a file to remove
                local n, serr = part:save(data .. "/" .. u.id)
                if not n then error(serr, 0) end
                u.bytes = n
            end
        end
    end)
    if not ok then
        -- nothing half-kept (remove gives nil, err for a file never opened)
        for _, u in ipairs(saved) do fs.remove(data .. "/" .. u.id) end
        if err == "too many files" then
            return { status = 413, json = { error = "at most " .. MAX_FILES .. " files at once" } }
        end
        error(err, 0) -- a limit: or http: error: the app answers its status (413, 400, ...)
    end
    local list = uploads[user] or json.array()
    uploads[user] = list
    for _, u in ipairs(saved) do list[#list + 1] = u end
    if (req.headers.accept or ""):find("application/json", 1, true) then
        return { status = 201, json = { saved = json.array(saved) } }
    end
    return see_other("/")
end)

app:static("/static", here .. "/public")

local function short_page(status, title, text)
    local html = '<!doctype html><title>%s</title><p>%s <a href="/">Back</a>.</p>'
    return { status = status, html = html:format(title, text) }
end
app:not_found(function() return short_page(404, "Not found", "Nothing here.") end)
app:on_error(function() return short_page(500, "Error", "Something went wrong.") end)

if own_data then
    app:on_shutdown(function()
        for _, name in ipairs(fs.list(data) or {}) do fs.remove(data .. "/" .. name) end
        fs.remove(data)
    end)
end

app:run{ host = host, port = port }
