-- loom.crypto against published vectors: NIST's SHA-1/256/512 examples (FIPS 180 "abc", the
-- empty string, the 448-bit message, a million 'a'), RFC 2202 (HMAC-SHA1), RFC 4231
-- (HMAC-SHA256/512, cases 1-7), RFC 4648 (base64, base64url); random, equal and misuse. The
-- internal AES-GCM seal/open (for sealed session cookies) against McGrew and Viega's GCM
-- test cases 3, 4 and 16.
local loom = require "loom"
local core = require "loom.core"
local crypto = loom.crypto

local function unhex(s)
    return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function bytes(from, to)
    local t = {}
    for i = from, to do t[#t + 1] = string.char(i) end
    return table.concat(t)
end

describe("crypto digests", function()
    local m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
    local m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        .. "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
    local million = string.rep("a", 1000000)

    it("SHA-1 gives NIST's digests", function()
        assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", crypto.hex(crypto.sha1("abc")))
        assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", crypto.hex(crypto.sha1("")))
        assert.equal("84983e441c3bd26ebaae4aa1f95129e5e54670f1", crypto.hex(crypto.sha1(m448)))
        assert.equal("34aa973cd4c4daa4f61eeb2bdbad27316534016f", crypto.hex(crypto.sha1(million)))
    end)

    it("SHA-256 gives NIST's digests", function()
        assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            crypto.hex(crypto.sha256("abc")))
        assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            crypto.hex(crypto.sha256("")))
        assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            crypto.hex(crypto.sha256(m448)))
        assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            crypto.hex(crypto.sha256(million)))
    end)

    it("SHA-512 gives NIST's digests", function()
        assert.equal("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            .. "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            crypto.hex(crypto.sha512("abc")))
        assert.equal("cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
            .. "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
            crypto.hex(crypto.sha512("")))
        assert.equal("204a8fc6dda82f0a0ced7beb8e08a41657c16ef468b228a8279be331a703c335"
            .. "96fd15c13b1b07f9aa1d3bea57789ca031ad85c7a71dd70354ec631238ca3445",
            crypto.hex(crypto.sha512(m448)))
        assert.equal("8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
            .. "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
            crypto.hex(crypto.sha512(m896)))
        assert.equal("e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
            .. "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b",
            crypto.hex(crypto.sha512(million)))
    end)

    it("returns raw bytes of the digest's size and hashes embedded zeros", function()
        assert.equal(20, #crypto.sha1("x"))
        assert.equal(32, #crypto.sha256("x"))
        assert.equal(64, #crypto.sha512("x"))
        assert.are_not.equal(crypto.sha256("a\0b"), crypto.sha256("a\0c"))
        assert.are_not.equal(crypto.sha256("a\0"), crypto.sha256("a"))
    end)
end)

describe("crypto.hmac", function()
    -- RFC 4231 section 4: key, data, HMAC-SHA-256, HMAC-SHA-512
    local rfc4231 = {
        { string.rep("\x0b", 20), "Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
                .. "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854" },
        { "Jefe", "what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                .. "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737" },
        { string.rep("\xaa", 20), string.rep("\xdd", 50),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
                .. "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb" },
        { bytes(1, 25), string.rep("\xcd", 50),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
                .. "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd" },
        -- case 5: the RFC gives only the first 128 bits
        { string.rep("\x0c", 20), "Test With Truncation",
            "a3b6167473100ee06e0c796c2955552b", "415fad6271580a531d4179bc891d87a6", truncated = true },
        { string.rep("\xaa", 131), "Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
                .. "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598" },
        { string.rep("\xaa", 131), "This is a test using a larger than block-size key and a larger "
                .. "than block-size data. The key needs to be hashed before being used by the HMAC "
                .. "algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
                .. "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58" },
    }

    it("gives RFC 4231's HMAC-SHA256 and HMAC-SHA512 (cases 1-7)", function()
        for i, c in ipairs(rfc4231) do
            local h256 = crypto.hex(crypto.hmac("sha256", c[1], c[2]))
            local h512 = crypto.hex(crypto.hmac("sha512", c[1], c[2]))
            assert.equal(64, #h256, "case " .. i)
            assert.equal(128, #h512, "case " .. i)
            if c.truncated then
                h256, h512 = h256:sub(1, #c[3]), h512:sub(1, #c[4])
            end
            assert.equal(c[3], h256, "case " .. i)
            assert.equal(c[4], h512, "case " .. i)
        end
    end)

    it("gives RFC 2202's HMAC-SHA1 (cases 1-7)", function()
        local rfc2202 = {
            { string.rep("\x0b", 20), "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00" },
            { "Jefe", "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79" },
            { string.rep("\xaa", 20), string.rep("\xdd", 50), "125d7342b9ac11cd91a39af48aa17b4f63f175d3" },
            { bytes(1, 25), string.rep("\xcd", 50), "4c9007f4026250c6bc8414f9bf50c86c2d7235da" },
            { string.rep("\x0c", 20), "Test With Truncation", "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04" },
            { string.rep("\xaa", 80), "Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112" },
            { string.rep("\xaa", 80), "Test Using Larger Than Block-Size Key and Larger Than One "
                .. "Block-Size Data", "e8e99d0f45237d786d6bbaa7965c7808bbff1a91" },
        }
        for i, c in ipairs(rfc2202) do
            assert.equal(c[3], crypto.hex(crypto.hmac("sha1", c[1], c[2])), "case " .. i)
        end
    end)

    it("takes an empty key and message", function()
        assert.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
            crypto.hex(crypto.hmac("sha256", "", "")))
    end)
end)

describe("crypto.random", function()
    it("gives n bytes, and two calls differ", function()
        assert.equal("", crypto.random(0))
        assert.equal(1, #crypto.random(1))
        assert.equal(32, #crypto.random(32))
        assert.equal(100000, #crypto.random(100000))
        assert.are_not.equal(crypto.random(16), crypto.random(16))
    end)

    it("covers every byte value", function()
        -- 65536 bytes: each value is missed with probability (255/256)^65536, about e^-256
        local s, seen, count = crypto.random(65536), {}, 0
        for i = 1, #s do
            local b = s:byte(i)
            if not seen[b] then seen[b], count = true, count + 1 end
        end
        assert.equal(256, count)
    end)

    it("raises on a bad n", function()
        assert.error_matches(function() crypto.random(-1) end, "bad argument #1 to 'random'")
        assert.error_matches(function() crypto.random(1048577) end,
            "bad argument #1 to 'random' %(n must be 0 to 1048576%)")
        assert.error_matches(function() crypto.random(1.5) end, "number has no integer representation")
        assert.error_matches(function() crypto.random() end,
            "bad argument #1 to 'random' %(number expected, got no value%)")
        assert.equal(1048576, #crypto.random(1048576))
    end)
end)

describe("crypto.equal", function()
    it("compares bytes, lengths included", function()
        assert.is_true(crypto.equal("", ""))
        assert.is_true(crypto.equal("abc", "abc"))
        assert.is_true(crypto.equal("a\0b", "a\0b"))
        assert.is_false(crypto.equal("abc", "abd"))
        assert.is_false(crypto.equal("abc", "xbc"))
        assert.is_false(crypto.equal("a\0b", "a\0c"))
        assert.is_false(crypto.equal("abc", "ab"))
        assert.is_false(crypto.equal("ab", "abc"))
        assert.is_false(crypto.equal("", "a"))
        assert.is_false(crypto.equal("a", ""))
        -- b repeated to a's length is not equal to a
        assert.is_false(crypto.equal("abab", "ab"))
        assert.is_false(crypto.equal("aaaa", "a"))
    end)

    it("raises on what is not a string", function()
        assert.error_matches(function() crypto.equal("a", nil) end,
            "bad argument #2 to 'equal' %(string expected, got nil%)")
        assert.error_matches(function() crypto.equal({}, "a") end,
            "bad argument #1 to 'equal' %(string expected, got table%)")
    end)
end)

describe("crypto hex and base64", function()
    it("hex is lower case, two digits a byte", function()
        assert.equal("", crypto.hex(""))
        assert.equal("00010aff7f80", crypto.hex("\0\1\10\255\127\128"))
        assert.equal("666f6f", crypto.hex("foo"))
        assert.equal(512, #crypto.hex(bytes(0, 255)))
    end)

    -- RFC 4648 section 10
    local vectors = { { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" } }

    it("base64 and unbase64 give RFC 4648's vectors", function()
        for _, v in ipairs(vectors) do
            assert.equal(v[2], crypto.base64(v[1]))
            assert.equal(v[1], crypto.unbase64(v[2]))
        end
    end)

    it("base64url is unpadded and uses - and _", function()
        for _, v in ipairs(vectors) do
            local unpadded = v[2]:gsub("=", "")
            assert.equal(unpadded, crypto.base64url(v[1]))
            assert.equal(v[1], crypto.unbase64url(unpadded))
            assert.equal(v[1], crypto.unbase64url(v[2])) -- padding, when right, is accepted
        end
        assert.equal("+/+/", crypto.base64("\xfb\xff\xbf"))
        assert.equal("-_-_", crypto.base64url("\xfb\xff\xbf"))
        assert.equal("\xfb\xff\xbf", crypto.unbase64("+/+/"))
        assert.equal("\xfb\xff\xbf", crypto.unbase64url("-_-_"))
        assert.equal("+/8=", crypto.base64("\xfb\xff"))
        assert.equal("-_8", crypto.base64url("\xfb\xff"))
    end)

    it("round-trips every byte value and every length", function()
        local all = bytes(0, 255)
        for n = 0, 70 do
            local s = all:sub(1, n) .. all:sub(256 - n)
            assert.equal(s, crypto.unbase64(crypto.base64(s)))
            assert.equal(s, crypto.unbase64url(crypto.base64url(s)))
            assert.is_nil(crypto.base64url(s):find("[=+/]"))
        end
    end)

    it("unbase64 of invalid input is nil, 'crypto: invalid base64 ...'", function()
        local bad = {
            "Zg", "Zg=", "Zm9vY", "Z", -- not a multiple of 4
            "Zg=a", "Z===", "=Zm8", "Zm=v", "Zm9v====", -- padding in the wrong place or too much
            "Zm9v\n", "Zm 9v", "Zm9v\0", "Zm8\xff", -- outside the alphabet
            "Zm-_", -- the base64url alphabet
            "Zh==", "Zm9=", -- bits set after the last byte (not the one encoding of "f", "fo")
        }
        for _, s in ipairs(bad) do
            local v, err = crypto.unbase64(s)
            assert.is_nil(v, s)
            assert.matches("^crypto: invalid base64 %(", err, nil, false, s)
        end
    end)

    it("unbase64url of invalid input is nil, 'crypto: invalid base64 ...'", function()
        local bad = { "Z", "Zm9vY", "Zg=", "Zg=a", "Z===", "Zm+/", "Zm9v\n", "Zh", "Zm9", "Zm9v=" }
        for _, s in ipairs(bad) do
            local v, err = crypto.unbase64url(s)
            assert.is_nil(v, s)
            assert.matches("^crypto: invalid base64 %(", err, nil, false, s)
        end
    end)

    it("raises on what is not a string", function()
        assert.error_matches(function() crypto.sha256(nil) end,
            "bad argument #1 to 'sha256' %(string expected, got nil%)")
        assert.error_matches(function() crypto.hex({}) end, "bad argument #1 to 'hex'")
        assert.error_matches(function() crypto.unbase64(true) end, "bad argument #1 to 'unbase64'")
        assert.error_matches(function() crypto.hmac("md5", "k", "m") end,
            "bad argument #1 to 'hmac' %(invalid option 'md5'%)")
        assert.error_matches(function() crypto.hmac("sha256", nil, "m") end,
            "bad argument #2 to 'hmac' %(string expected, got nil%)")
        assert.error_matches(function() crypto.hmac("sha256", "k") end,
            "bad argument #3 to 'hmac' %(string expected, got no value%)")
    end)
end)

describe("core.aes_gcm_seal / aes_gcm_open (internal)", function()
    local K = unhex("feffe9928665731c6d6a8f9467308308")
    local IV = unhex("cafebabefacedbaddecaf888")
    local P = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        .. "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
    local A = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")

    it("gives the GCM specification's test cases 3, 4 and 16", function()
        -- case 3: no additional data
        assert.equal("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
            .. "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
            .. "4d5c2af327cd64a62cf35abd2ba6fab4",
            crypto.hex(core.aes_gcm_seal(K, IV, P .. unhex("1aafd255"))))
        -- case 4: with additional data
        local sealed = core.aes_gcm_seal(K, IV, P, A)
        assert.equal("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
            .. "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
            .. "5bc94fbc3221a5db94fae95ae7121a47", crypto.hex(sealed))
        assert.equal(P, core.aes_gcm_open(K, IV, sealed, A))
        -- case 16: a 256-bit key
        local K256 = K .. K
        local s16 = core.aes_gcm_seal(K256, IV, P, A)
        assert.equal("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
            .. "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
            .. "76fc6ece0f4e1768cddf8853bb2d551b", crypto.hex(s16))
        assert.equal(P, core.aes_gcm_open(K256, IV, s16, A))
    end)

    it("opens only what it sealed, under the same key, iv and aad", function()
        local sealed = core.aes_gcm_seal(K, IV, "hello", "ctx")
        assert.equal("hello", core.aes_gcm_open(K, IV, sealed, "ctx"))
        assert.equal("", core.aes_gcm_open(K, IV, core.aes_gcm_seal(K, IV, "")))
        local fail = { nil, "crypto: authentication failed" }
        for i = 1, #sealed do -- any flipped bit, in the text or the tag
            local t = sealed:sub(1, i - 1) .. string.char(sealed:byte(i) ~ 1) .. sealed:sub(i + 1)
            assert.same(fail, { core.aes_gcm_open(K, IV, t, "ctx") })
        end
        assert.same(fail, { core.aes_gcm_open(K, IV, sealed, "other") })
        assert.same(fail, { core.aes_gcm_open(K, IV, sealed) })
        assert.same(fail, { core.aes_gcm_open(K, unhex("cafebabefacedbaddecaf889"), sealed, "ctx") })
        assert.same(fail, { core.aes_gcm_open(string.rep("k", 16), IV, sealed, "ctx") })
        assert.same(fail, { core.aes_gcm_open(K, IV, sealed:sub(1, -2), "ctx") })
        assert.same({ nil, "crypto: sealed data shorter than its tag" },
            { core.aes_gcm_open(K, IV, sealed:sub(1, 15), "ctx") })
    end)

    it("raises on a bad key or iv size", function()
        assert.error_matches(function() core.aes_gcm_seal("short", IV, "x") end,
            "bad argument #1 to 'aes_gcm_seal' %(key of 16, 24 or 32 bytes%)")
        assert.error_matches(function() core.aes_gcm_open(K, "iv", "x") end,
            "bad argument #2 to 'aes_gcm_open' %(iv of 12 bytes%)")
        assert.error_matches(function() core.aes_gcm_seal(K, IV, nil) end,
            "bad argument #3 to 'aes_gcm_seal' %(string expected, got nil%)")
    end)

    it("is not part of loom.crypto", function()
        assert.is_nil(crypto.aes_gcm_seal)
        assert.is_nil(crypto.aes_gcm_open)
    end)
end)
