-- examples/todo/app.lua: a JSON todo API on PostgreSQL (loom.pg) with its sessions in Redis
-- (loom.redis as the store of loom.cookie_session). No state lives in the process: run it
-- as many times as you like behind a load balancer, against one database and one Redis,
-- with one SESSION_SECRET, and a client logged in through one instance is logged in on all.
--
--   $ SESSION_SECRET=... build/loom examples/todo/app.lua [port] [database_url] [redis_url]
--   listening on http://127.0.0.1:8080
--
-- port: arg 1, else $PORT, else 8080. database_url: arg 2, else $DATABASE_URL, else
-- postgresql://loom:loom-secret@127.0.0.1:5432/loom. redis_url: arg 3, else $REDIS_URL, else
-- redis://127.0.0.1:6379/0. SESSION_SECRET signs the session cookie; every instance needs
-- the same one (without it each process makes a random one: sessions then end with the
-- process and are not shared). The tables (todo_users, todos) are made at start if missing;
-- the role needs CREATE on the database (pgcrypto, a trusted extension, hashes passwords).
--
-- Routes (JSON in and out; errors are {error = "..."}):
--   POST   /register     {name, password}: 201 {id, name}; 409 if the name is taken
--   POST   /login        {name, password}: 200 {id, name} and the session cookie; 401 if wrong
--   POST   /logout       200 {}; the session is deleted from Redis and the cookie cleared
--   GET    /me           200 {id, name}
--   GET    /todos        200 [{id, title, done, created_at, updated_at}] (?done=true|false)
--   POST   /todos        {title}: 201 the todo
--   GET    /todos/{id}   200 the todo
--   PATCH  /todos/{id}   {title?, done?}: 200 the todo
--   DELETE /todos/{id}   204
-- Everything but /register and /login answers 401 without a session. A todo of another
-- user is 404, as one that does not exist. Each answer says which instance served it in
-- the header x-instance. A database or Redis failure is a 503 (the cause goes to stderr).
local port = tonumber(arg[1] or os.getenv("PORT")) or 8080
local db_url = arg[2] or os.getenv("DATABASE_URL") or "postgresql://loom:loom-secret@127.0.0.1:5432/loom"
local redis_url = arg[3] or os.getenv("REDIS_URL") or "redis://127.0.0.1:6379/0"
local instance = ("%s:%d"):format(os.getenv("HOSTNAME") or "local", port)

local json = loom.json
local db = loom.pg(db_url)       -- a pool (max 10), lazy: nothing connects before a query
local redis = loom.redis(redis_url)

local secret = os.getenv("SESSION_SECRET")
if not secret then
    io.stderr:write("todo: no SESSION_SECRET: a random one, sessions are this process's only\n")
    secret = loom.crypto.random(32)
end

local app = loom.app{ max_body = 64 * 1024 }

-- The schema, once per start. Several instances may start together: the advisory lock makes
-- them take turns, so two `create table if not exists` never race on the catalog.
local SCHEMA = {
    "select pg_advisory_xact_lock(7301)",
    "create extension if not exists pgcrypto",
    [[create table if not exists todo_users (
        id bigint generated always as identity primary key,
        name text not null unique,
        password_hash text not null,
        created_at timestamptz not null default now())]],
    [[create table if not exists todos (
        id bigint generated always as identity primary key,
        user_id bigint not null references todo_users (id) on delete cascade,
        title text not null,
        done boolean not null default false,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now())]],
    "create index if not exists todos_user_id on todos (user_id, id)",
}
app:on_startup(function()
    assert(db:transaction(function(tx)
        for _, sql in ipairs(SCHEMA) do assert(tx:query(sql)) end
        return true
    end))
end)
app:on_shutdown(function()
    db:close()
    redis:close()
end)

app:use(function(req, next)
    local res = next(req)
    res.headers = res.headers or {}
    res.headers["x-instance"] = instance
    return res
end)
app:use(loom.csrf())                 -- a browser's cross-origin POST is refused before a handler
app:use(loom.cookie_session{
    secret = secret,
    name = "todo_session",
    store = redis,                   -- the data in Redis (loom:session:<id>, max_age as TTL)
    max_age = 7 * 86400,
})

local function fail(status, msg) return { status = status, json = { error = msg } } end

-- A runtime failure of PostgreSQL or Redis: the client gets a 503, stderr the reason.
local function unavailable(err)
    io.stderr:write("todo: ", tostring(err), "\n")
    return fail(503, "the database is unavailable")
end

-- The JSON object of the body, or nil and the 400 to answer.
local function body(req)
    local t, err = req:json()
    if type(t) ~= "table" then return nil, fail(400, err or "a JSON object expected") end
    return t
end

local function credentials(req)
    local t, bad = body(req)
    if not t then return nil, nil, bad end
    local name, password = t.name, t.password
    if type(name) ~= "string" or not name:match("^[%w_.-]+$") or #name > 64 then
        return nil, nil, fail(400, "name: 1 to 64 letters, digits, '_', '.' or '-'")
    end
    if type(password) ~= "string" or #password < 8 or #password > 200 then
        return nil, nil, fail(400, "password: 8 to 200 bytes")
    end
    return name, password
end

app:post("/register", function(req)
    local name, password, bad = credentials(req)
    if not name then return bad end
    -- bcrypt on the server (pgcrypto); the password travels as a parameter, never in the SQL
    local rows, err = db:query([[insert into todo_users (name, password_hash)
        values ($1, crypt($2, gen_salt('bf', 8))) returning id, name]], name, password)
    if not rows then
        if err:match("^pg: 23505") then return fail(409, "that name is taken") end
        return unavailable(err)
    end
    return { status = 201, json = rows[1] }
end)

app:post("/login", function(req)
    local name, password, bad = credentials(req)
    if not name then return bad end
    local rows, err = db:query([[select id, name from todo_users
        where name = $1 and password_hash = crypt($2, password_hash)]], name, password)
    if not rows then return unavailable(err) end
    local user = rows[1]
    if not user then return fail(401, "wrong name or password") end
    -- a changed session is saved under a new id (the one sent before the login is void)
    req.session.user_id, req.session.name = user.id, user.name
    return { json = user }
end)

-- The routes below need a session: the user's id, or the 401 to answer.
local function user_of(req)
    local id = req.session.user_id
    if math.type(id) ~= "integer" then return nil, fail(401, "log in first") end
    return id
end

app:post("/logout", function(req)
    for k in pairs(req.session) do req.session[k] = nil end   -- deleted from Redis, cookie too
    return { json = {} }
end)

app:get("/me", function(req)
    local uid, bad = user_of(req)
    if not uid then return bad end
    return { json = { id = uid, name = req.session.name } }
end)

local COLUMNS = "id, title, done, created_at, updated_at"

app:get("/todos", function(req)
    local uid, bad = user_of(req)
    if not uid then return bad end
    local done = req.query.done
    if done ~= nil and done ~= "true" and done ~= "false" then
        return fail(400, "done: true or false")
    end
    if done ~= nil then done = done == "true" end
    local rows, err = db:query("select " .. COLUMNS .. [[ from todos
        where user_id = $1 and ($2::boolean is null or done = $2) order by id]], uid, done)
    if not rows then return unavailable(err) end
    return { json = json.array(rows) }
end)

local function title_of(t)
    local title = t.title
    if type(title) ~= "string" or #title == 0 or #title > 500 then
        return nil, fail(400, "title: a string of 1 to 500 bytes")
    end
    return title
end

app:post("/todos", function(req)
    local uid, bad = user_of(req)
    if not uid then return bad end
    local t
    t, bad = body(req)
    if not t then return bad end
    local title
    title, bad = title_of(t)
    if not title then return bad end
    local rows, err = db:query("insert into todos (user_id, title) values ($1, $2) returning "
        .. COLUMNS, uid, title)
    if not rows then return unavailable(err) end
    return { status = 201, json = rows[1] }
end)

-- {id} as an integer, or nil (then the todo does not exist)
local function todo_id(req)
    local id = req.params.id
    return id:match("^%d+$") and #id < 19 and math.tointeger(tonumber(id)) or nil
end

app:get("/todos/{id}", function(req)
    local uid, bad = user_of(req)
    if not uid then return bad end
    local id = todo_id(req)
    if not id then return fail(404, "no such todo") end
    local rows, err = db:query("select " .. COLUMNS .. " from todos where id = $1 and user_id = $2",
        id, uid)
    if not rows then return unavailable(err) end
    if not rows[1] then return fail(404, "no such todo") end
    return { json = rows[1] }
end)

app:patch("/todos/{id}", function(req)
    local uid, bad = user_of(req)
    if not uid then return bad end
    local id = todo_id(req)
    if not id then return fail(404, "no such todo") end
    local t
    t, bad = body(req)
    if not t then return bad end
    local title, done = nil, t.done
    if t.title ~= nil then
        title, bad = title_of(t)
        if not title then return bad end
    end
    if done ~= nil and type(done) ~= "boolean" then return fail(400, "done: true or false") end
    local rows, err = db:query([[update todos set title = coalesce($3, title),
        done = coalesce($4, done), updated_at = now()
        where id = $1 and user_id = $2 returning ]] .. COLUMNS, id, uid, title, done)
    if not rows then return unavailable(err) end
    if not rows[1] then return fail(404, "no such todo") end
    return { json = rows[1] }
end)

app:delete("/todos/{id}", function(req)
    local uid, bad = user_of(req)
    if not uid then return bad end
    local id = todo_id(req)
    if not id then return fail(404, "no such todo") end
    local rows, err = db:query("delete from todos where id = $1 and user_id = $2", id, uid)
    if not rows then return unavailable(err) end
    if rows.affected == 0 then return fail(404, "no such todo") end
    return { status = 204 }
end)

app:run{ host = os.getenv("HOST") or "127.0.0.1", port = port }
