-- examples/json_api.lua: a JSON API over an in-memory list of todos.
--
--   $ build/loom examples/json_api.lua [port]
--   $ curl -s -X POST -H 'content-type: application/json' -d '{"title":"milk"}' localhost:8080/todos
--   {"id":1,"title":"milk","done":false}
--
--   GET    /todos              200 [todo, ...]        ?done=true|false filters
--   POST   /todos              {title, done?}  -> 201 todo, Location: /todos/{id}
--   GET    /todos/{id}         200 todo | 404
--   PUT    /todos/{id}         {title, done}   -> 200 todo (replaces it)
--   PATCH  /todos/{id}         {title?, done?} -> 200 todo (changes what is given)
--   DELETE /todos/{id}         204 | 404
--
-- A body that is not JSON, or not sent as application/json, gets 400 or 415; JSON that is
-- not a valid todo gets 422 with {error, fields = {name = problem}}. Every error is JSON:
-- {error = "..."}, run on its own an unknown path (app:not_found) and a handler's error
-- (app:on_error) included. Runs and mounts like examples/hello.lua.

local MAX_TITLE = 200

local function fail(status, message, fields)
    return { status = status, json = { error = message, fields = fields } }
end

-- Checks a decoded body; `partial` (PATCH) lets fields be missing. -> todo fields | nil, problems
local function validate(body, partial)
    if type(body) ~= "table" or body[1] ~= nil then
        return nil, { body = "must be a JSON object" }
    end
    local problems, out = {}, {}
    for k in pairs(body) do
        if k ~= "title" and k ~= "done" then problems[tostring(k)] = "unknown field" end
    end
    local title = body.title
    if title == nil and not partial then
        problems.title = "is required"
    elseif title ~= nil then
        if type(title) ~= "string" then
            problems.title = "must be a string"
        elseif not title:find("%S") then
            problems.title = "must not be empty"
        elseif #title > MAX_TITLE then
            problems.title = "must be at most " .. MAX_TITLE .. " bytes"
        else
            out.title = title
        end
    end
    if body.done ~= nil then
        if type(body.done) ~= "boolean" then problems.done = "must be true or false" end
        out.done = body.done
    end
    if next(problems) then return nil, problems end
    return out
end

-- The request's JSON body | nil, the error response.
local function json_body(req)
    local ct = req.headers["content-type"] or ""
    if not ct:lower():find("^application/json") then
        return nil, fail(415, "send the body as application/json")
    end
    local body, err = req:json()
    if body == nil then return nil, fail(400, err or "a JSON body is required") end
    return body
end

-- mount(app [, prefix]) -> app. Each mount has its own list.
local function mount(app, prefix)
    prefix = prefix or ""
    local todos, last_id = {}, 0

    local function find(req)
        local id = math.tointeger(tonumber(req.params.id))
        return id and todos[id]
    end

    local function list(filter)
        local out = loom.json.array() -- a list, [] when empty (an empty table would be {})
        for id = 1, last_id do
            local t = todos[id]
            if t and (filter == nil or t.done == filter) then out[#out + 1] = t end
        end
        return { json = out }
    end

    app:get(prefix .. "/todos", function(req)
        local done = req.query.done
        if done ~= nil and done ~= "true" and done ~= "false" then
            return fail(400, "done must be true or false")
        end
        return list(done and done == "true")
    end)

    app:post(prefix .. "/todos", function(req)
        local body, err = json_body(req)
        if not body then return err end
        local fields, problems = validate(body)
        if not fields then return fail(422, "invalid todo", problems) end
        last_id = last_id + 1
        local todo = { id = last_id, title = fields.title, done = fields.done or false }
        todos[last_id] = todo
        return { status = 201, headers = { location = prefix .. "/todos/" .. last_id }, json = todo }
    end)

    app:get(prefix .. "/todos/{id}", function(req)
        local todo = find(req)
        if not todo then return fail(404, "no such todo") end
        return { json = todo }
    end)

    local function update(req, partial)
        local todo = find(req)
        if not todo then return fail(404, "no such todo") end
        local body, err = json_body(req)
        if not body then return err end
        local fields, problems = validate(body, partial)
        if fields and not partial and fields.done == nil then
            fields, problems = nil, { done = "is required" }
        end
        if not fields then return fail(422, "invalid todo", problems) end
        for k, v in pairs(fields) do todo[k] = v end
        return { json = todo }
    end
    app:put(prefix .. "/todos/{id}", function(req) return update(req, false) end)
    app:patch(prefix .. "/todos/{id}", function(req) return update(req, true) end)

    app:delete(prefix .. "/todos/{id}", function(req)
        local todo = find(req)
        if not todo then return fail(404, "no such todo") end
        todos[todo.id] = nil
    end)
    return app
end

if debug.getinfo(1, "S").source == "@" .. tostring(arg and arg[0]) then
    local app = mount(loom.app{ max_body = 64 * 1024 })
    -- app-wide, so only here: mounted beside other examples, they keep their own answers
    app:not_found(function() return fail(404, "no such path") end)
    app:on_error(function() return fail(500, "internal error") end)
    app:run{
        host = os.getenv("HOST") or "127.0.0.1",
        port = tonumber(arg[1] or os.getenv("PORT")) or 8080,
    }
end

return mount
